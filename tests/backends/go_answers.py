"""Bodies as Go HTTP servers write them: JSON answers, and ``http.Error``'s plain text."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response

PAGE_NOT_FOUND = "404 page not found\n"  # Go's router, for a route it does not have


def json_answer(document: Any) -> Response:
    """200 with a compact JSON document (Go marshalers write no spaces)."""
    return Response(json.dumps(document, separators=(",", ":")), 200, mimetype="application/json")


def text_answer(body: str, status: int) -> Response:
    """What ``http.Error`` sends: plain text (it adds a newline when the caller did not)."""
    body = body if body.endswith("\n") else body + "\n"
    return Response(body, status, content_type="text/plain; charset=utf-8")
