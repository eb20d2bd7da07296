"""HTTPS calls from ``gunicorn --preload -k gevent`` workers whose app does not monkey-patch first.

gunicorn's gevent worker patches after the fork, so whatever the preloaded app imported in the
master stays unpatched. An app that imports ``requests`` only where it calls out works so without
tracekit; ``tracekit.init()`` in the master built the OTLP exporter there, which imported
``requests`` and ``urllib3`` (and with them ``ssl``'s names), and every HTTPS call of every worker
then failed with ``RecursionError``. Real gunicorn, real gevent, a TLS server on loopback with a
test certificate, and a real tracekit receiver taking the workers' spans over OTLP/HTTP.
"""

from __future__ import annotations

import importlib.util
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conditions import need
from loopback import free_port, start_werkzeug
from stopping import Service

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

TLS = Path(__file__).parents[1] / "backends" / "tls"  # a test CA and the server certificate
CALLS = 3

APP_CALLING_OUT_OVER_HTTPS = """
import os, tracekit
from tracekit.wsgi import TracekitMiddleware

tracekit.init("gevent-https")

def call_out(environ, start_response):
    import requests  # where it is used, as the app would without tracekit

    try:
        answer = requests.get(os.environ["TLS_URL"], verify=os.environ["TLS_CA"], timeout=10)
        status, body = "200 OK", answer.content
    except Exception as error:
        status, body = "500 Internal Server Error", type(error).__name__.encode()
    start_response(status, [("Content-Type", "text/plain")])
    return [body]

app = TracekitMiddleware(call_out)
"""


def _tls_answer(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"answered over TLS"]


@pytest.fixture
def tls_url() -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
    url, stop = start_werkzeug(_tls_answer, ssl_context=context)
    yield url
    stop()


def test_https_calls_of_workers_patched_after_the_fork_succeed(
    service: Service, tls_url: str
) -> None:
    need(importlib.util.find_spec("gevent") is not None, "gevent")
    receiver = Receiver(Store(service.store), ReceiverConfig(port=0, grpc_port=0)).start()
    try:
        service.write("app_module.py", APP_CALLING_OUT_OVER_HTTPS)
        port = free_port()
        service.start(
            "-m", "gunicorn", "--preload", "-w", "2", "-k", "gevent", "-b", f"127.0.0.1:{port}",
            "app_module:app",
            TRACEKIT_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            TLS_URL=f"{tls_url}/", TLS_CA=str(TLS / "ca.pem"),
        )  # fmt: skip
        service.wait_http(f"http://127.0.0.1:{port}/warmup")
        answers = [httpx.get(f"http://127.0.0.1:{port}/{n}", timeout=30) for n in range(CALLS)]

        expected = [(200, "answered over TLS")] * CALLS
        assert [(a.status_code, a.text) for a in answers] == expected, service.output()
        assert service.terminate() == 0
    finally:
        receiver.stop()
    assert "MonkeyPatchWarning" not in service.output()
    # The workers' spans still went out over OTLP, through the exporter each worker made.
    calls = [s for s in service.spans() if s.kind == "CLIENT" and s.service == "gevent-https"]
    assert len(calls) >= CALLS, service.output()
