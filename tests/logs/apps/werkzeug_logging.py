"""A WSGI app under werkzeug's development server (what ``flask run`` and ``app.run()`` start),
its lines in a format naming tracekit's fields. ``/fail`` raises: werkzeug logs "Error on
request" and the 500's access line. Run as ``python werkzeug_logging.py PORT``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import run_simple

import tracekit
from tracekit.wsgi import TracekitMiddleware

logging.basicConfig(
    level=logging.INFO,
    format="%(name)s %(levelname)s [%(correlation_id)s %(trace_id)s] %(message)s",
)
tracekit.init("werkzeug-logs")


def _order(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    logging.getLogger("shop.wsgi").info("wsgi view: order page")
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("the order page failed")  # werkzeug answers 500 and logs it
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), TracekitMiddleware(_order))
