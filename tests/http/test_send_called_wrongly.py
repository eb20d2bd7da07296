"""A client's ``send`` called without its request fails in the client's own words, as without
tracekit: before, tracekit's wrapper looked the request up first and raised ``KeyError:
'request'`` from inside itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
import requests
import urllib3

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


def _error_of(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises(BaseException) as raised:
        call()
    return type(raised.value), str(raised.value)


@pytest.mark.parametrize("given", ["http://127.0.0.1:9/", object(), None])
def test_httpx_client_send_of_something_else_than_a_request(given: object) -> None:
    """httpx's own error (what the unwrapped method raises), not tracekit's AttributeError
    on ``.method`` raised from inside its wrapper."""
    with httpx.Client() as client:
        own = _error_of(lambda: httpx.Client.send.__wrapped__(client, given))
        assert _error_of(lambda: client.send(given)) == own  # type: ignore[arg-type]
        assert _error_of(lambda: client.send(request=given)) == own  # type: ignore[arg-type]


def test_httpx_async_client_send_of_something_else_than_a_request() -> None:
    async def send(method: Callable[..., Awaitable[object]]) -> None:
        async with httpx.AsyncClient() as client:
            await method(client, object())

    own = _error_of(lambda: asyncio.run(send(httpx.AsyncClient.send.__wrapped__)))
    assert _error_of(lambda: asyncio.run(send(httpx.AsyncClient.send))) == own


@pytest.mark.parametrize("given", ["Accept: */*", [("Accept", "*/*")], 5])
def test_urllib3_urlopen_with_headers_that_are_no_mapping(given: object) -> None:
    """urllib3 refuses headers that are no mapping: before, tracekit made a header dict of
    them first, raising its own ValueError from inside its wrapper (a string) or sending the
    request urllib3 would have refused (a list of pairs)."""
    url, options = "http://127.0.0.1:9/", {"headers": given, "retries": False}
    manager = urllib3.PoolManager()
    own = _error_of(lambda: urllib3.PoolManager.urlopen.__wrapped__(manager, "GET", url, **options))
    assert _error_of(lambda: manager.urlopen("GET", url, **options)) == own
    pool = urllib3.HTTPConnectionPool("127.0.0.1", 9)
    own = _error_of(
        lambda: urllib3.HTTPConnectionPool.urlopen.__wrapped__(pool, "GET", "/", **options)
    )
    assert _error_of(lambda: pool.urlopen("GET", "/", **options)) == own
