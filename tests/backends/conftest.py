"""A real HTTP server on loopback (werkzeug, in a thread) for the backend tests.

No Tempo or Jaeger can run on these machines; ``tempo_fake`` and ``jaeger_fake`` are WSGI apps
that answer as those servers do (their encodings from ``otlp_fixtures``, their status codes and
error bodies), and tests serve them, or a one-off handler, with ``serve``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

_HERE = Path(__file__).resolve().parent
for directory in (_HERE, _HERE.parent / "path"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

Handler = Callable[[Request], Response]


class FakeBackend:
    """Serves ``handler`` on 127.0.0.1 and records every request path with its query string."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests.append(request)
        return self.handler(request)(environ, start_response)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], FakeBackend]]:
    started: list[FakeBackend] = []

    def start(handler: Handler) -> FakeBackend:
        started.append(FakeBackend(handler))
        return started[-1]

    yield start
    for backend in started:
        backend.close()
