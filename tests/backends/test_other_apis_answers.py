"""A URL that leads to another JSON API (Jaeger's UI API under a wrong base path, a gateway's
GraphQL-style error, a proxy's own JSON) answers 200 with an object of other fields. tracekit read
its missing fields as empty, and said "no request found" (exit 1), as if the backend held nothing;
it is now one line, exit 2. An empty object stays "nothing found": protobuf's JSON leaves empty
fields out.

A real server on loopback answers every path with the one document.
"""

from __future__ import annotations

from typing import Any

import pytest
from go_answers import json_answer
from tracekit_process import tracekit
from werkzeug.wrappers import Request, Response

OTHER_APIS = [{"data": None}, {"errors": [{"message": "not found"}]}, {"data": [], "total": 0}]
SAYS = {
    "--jaeger": "not an api_v3",
    "--tempo": "is the URL Tempo's API?",
}


def answering(document: Any) -> Any:
    def handler(request: Request) -> Response:
        return json_answer(document)

    return handler


@pytest.mark.parametrize("document", OTHER_APIS)
@pytest.mark.parametrize(
    "command", [["trace", "cid-1"], ["trace", "ab" * 16], ["search"], ["services"]]
)
@pytest.mark.parametrize("backend", sorted(SAYS))
def test_another_apis_answer_is_one_line_and_exit_2(
    serve: Any, backend: str, command: list[str], document: Any
) -> None:
    done = tracekit(*command, backend, serve(answering(document)).url, "--timeout", "5")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith("tracekit: ") and done.stderr.count("\n") == 1
    assert SAYS[backend] in done.stderr


@pytest.mark.parametrize("backend", sorted(SAYS))
def test_an_empty_object_is_still_nothing_found(serve: Any, backend: str) -> None:
    done = tracekit("search", backend, serve(answering({})).url, "--timeout", "5")
    assert (done.returncode, done.stderr) == (1, "tracekit: no requests match\n")


@pytest.mark.parametrize(
    "command", [["trace", "cid-1"], ["trace", "ab" * 16], ["search"], ["services"]]
)
def test_a_json_null_from_jaeger_is_one_line_and_exit_2(serve: Any, command: list[str]) -> None:
    """Jaeger says "nothing found" with its 404 document, never with 200 ``null`` (what a Go
    handler writes for a nil value): that was read as nothing found, exit 1."""
    done = tracekit(*command, "--jaeger", serve(answering(None)).url, "--timeout", "5")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith("tracekit: ") and done.stderr.count("\n") == 1
    assert "not an api_v3" in done.stderr
