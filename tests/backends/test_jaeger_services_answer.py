"""Jaeger's list of services (``GET /api/v3/services``), which tracekit searches one by one:
an entry that is no name is left out with one warning, and a list that is no list is one
backend error. Before, ``{"services": 5}`` was "internal error (TypeError ...)", and a null, an
object or a 5,000-character string was searched as a service named by its Python repr.

A real server on loopback answers as jaeger-query does (``jaeger_fake``), its services list
replaced.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from go_answers import json_answer
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import checkout
from werkzeug.wrappers import Request, Response

from tracekit_cli.main import cli

SERVICES = ["gateway", "orders", "payments", "bank"]


def listing(services: Any) -> Any:
    """A Jaeger holding the checkout request whose services list is ``services``."""
    fake = FakeJaeger(recent(checkout().spans))

    def handler(request: Request) -> Response:
        if request.path == "/api/v3/services":
            return json_answer(services)
        return fake(request)

    return handler


def search(url: str) -> Any:
    return CliRunner().invoke(
        cli, ["search", "--jaeger", url, "--format", "json"],
        env={"COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip


def test_an_entry_that_is_no_name_is_left_out_and_said(serve: Any) -> None:
    junk = [None, {"name": "\x1b[31mEVIL"}, 7, "", "a" * 5000, "orders"]
    backend = serve(listing({"services": SERVICES + junk}))
    result = search(backend.url)
    assert result.exit_code == 0, result.stderr
    assert [r["correlation_id"] for r in json.loads(result.stdout)["requests"]] == [
        "req-checkout-1"
    ]
    searched = [r.args["query.service_name"] for r in backend.requests if r.args]
    assert searched == sorted(SERVICES)  # each once, none of the junk
    assert result.stderr == (
        f"tracekit: warning: Jaeger at {backend.url} answered a service name that is no name: "
        "it is left out\n"
    )


@pytest.mark.parametrize("answer", [{"services": 5}, {"services": {"gateway": 1}}, ["gateway"]])
def test_a_list_that_is_no_list_is_one_backend_error(serve: Any, answer: Any) -> None:
    result = search(serve(listing(answer)).url)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "tracekit: Jaeger answered something that is not an api_v3 services document\n"
    )


@pytest.mark.parametrize("answer", [{}, {"services": None}, {"services": []}])
def test_no_services_yet_is_nothing_found(serve: Any, answer: Any) -> None:
    result = search(serve(listing(answer)).url)
    assert (result.exit_code, result.stderr) == (1, "tracekit: no requests match\n")


def test_a_name_utf8_cannot_hold_is_searched_as_the_store_keeps_it(serve: Any) -> None:
    """A name with a lone surrogate (JSON's ``\\ud800``, which no Go server writes but a server
    in front of one may) made every search 'internal error (UnicodeEncodeError: 'utf-8' codec
    can't encode character '\\ud800' ...)', exit 2; it is searched with U+FFFD in its place, as
    the store keeps such text, and the request in the other services is found."""
    backend = serve(listing({"services": [*SERVICES, "bad\ud800name"]}))
    result = search(backend.url)
    assert result.exit_code == 0, result.stderr
    assert [r["correlation_id"] for r in json.loads(result.stdout)["requests"]] == [
        "req-checkout-1"
    ]
    searched = [r.args["query.service_name"] for r in backend.requests if r.args]
    assert searched == ["bad\ufffdname", "bank", "gateway", "orders", "payments"]
