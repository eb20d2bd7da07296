"""A client's ``send`` called without its request fails in the client's own words, as without
tracekit: before, tracekit's wrapper looked the request up first and raised ``KeyError:
'request'`` from inside itself."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import requests

pytestmark = pytest.mark.usefixtures("http_clients")

MISSING = "missing 1 required positional argument: 'request'"


def test_requests_session_send_without_a_request() -> None:
    with requests.Session() as session, pytest.raises(TypeError, match=MISSING):
        session.send()


def test_httpx_client_send_without_a_request() -> None:
    with httpx.Client() as client, pytest.raises(TypeError, match=MISSING):
        client.send()  # type: ignore[call-arg]


def test_httpx_async_client_send_without_a_request() -> None:
    async def send() -> None:
        async with httpx.AsyncClient() as client:
            await client.send()  # type: ignore[call-arg]

    with pytest.raises(TypeError, match=MISSING):
        asyncio.run(send())
