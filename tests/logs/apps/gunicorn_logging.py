"""A WSGI app and a gunicorn logger class that takes over the root logger, as some teams write.

``RootTakingLogger.setup`` runs in gunicorn's master at start and again on every SIGHUP reload;
with ``--preload`` the app (and ``tracekit.init``) is imported in between, so the reload
reconfigures logging after init and the new workers inherit that.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn import glogging

import tracekit
from tracekit.wsgi import TracekitMiddleware

tracekit.init("gunicorn-shop", metrics_port=0)


class RootTakingLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, plus one stderr handler that replaces whatever the root had."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("gunicorn-class %(levelname)s [%(correlation_id)s] %(message)s")
        )
        logging.root.handlers = [handler]
        logging.root.setLevel(logging.INFO)


def _order(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    logging.getLogger("shop.wsgi").info("wsgi view: order page")
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("the order page failed")  # gunicorn answers 500 and logs it
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


app = TracekitMiddleware(_order)
