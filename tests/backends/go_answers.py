"""Bodies as Go HTTP servers write them: JSON answers, and ``http.Error``'s plain text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

PAGE_NOT_FOUND = "404 page not found\n"  # Go's router, for a route it does not have


def json_answer(document: Any) -> Response:
    """200 with a compact JSON document (Go marshalers write no spaces)."""
    return Response(json.dumps(document, separators=(",", ":")), 200, mimetype="application/json")


def text_answer(body: str, status: int) -> Response:
    """What ``http.Error`` sends: plain text (it adds a newline when the caller did not)."""
    body = body if body.endswith("\n") else body + "\n"
    return Response(body, status, content_type="text/plain; charset=utf-8")


def with_traces_edited(
    fake: Callable[[Request], Response], edit: Callable[[list[Any]], None]
) -> Callable[[Request], Response]:
    """``fake``'s answers, each trace it answers (Tempo's ``trace``, Jaeger's ``result``) first
    handed to ``edit`` as its list of resource spans."""

    def handler(request: Request) -> Response:
        answer = fake(request)
        if "traces/" not in request.path or answer.status_code != 200:
            return answer
        document = json.loads(answer.get_data())
        edit((document.get("trace") or document.get("result"))["resourceSpans"])
        return json_answer(document)

    return handler
