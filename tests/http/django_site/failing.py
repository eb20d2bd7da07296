"""A middleware below tracekit's that fails on ``/middleware-crash``, and on the response to a
request with ``?fail-after``, as one whose backend (a session or rate-limit store) is down
does; it runs under WSGI and ASGI alike."""

from __future__ import annotations

from typing import Any

from django.utils.deprecation import MiddlewareMixin


class FailingMiddleware(MiddlewareMixin):
    def process_request(self, request: Any) -> None:
        if request.path_info == "/middleware-crash":
            raise ConnectionError("the session store is unreachable")

    def process_response(self, request: Any, response: Any) -> Any:
        if "fail-after" in request.GET:
            raise ConnectionError("the session store is unreachable")
        return response
