"""A WSGI response whose ``close()`` raises, under real gunicorn: the server closes a response
after its last chunk has gone (Django's ``request_finished`` receivers run there), then logs
the exception ("Error handling request"); the client has its whole answer. tracekit's
middleware closed the body itself as the last chunk went, inside the server's loop over it:
the exception cut the response (no last chunk: "Response ended prematurely" for the client),
nothing of it reached the trace, and gunicorn's line about it showed no correlation ID. The
request had answered; the failure came after it, as a failure after an ASGI response does: a
failed span ``GET after response`` under the request's, which keeps its 200.
"""

from __future__ import annotations

import socket
import struct

import pytest
import requests
from loopback import free_port
from metric_labels import served_counts
from stopping import Service, server_spans

APP = """
import tracekit
from tracekit.metrics import wsgi_metrics_app
from tracekit.wsgi import TracekitMiddleware
from werkzeug.middleware.dispatcher import DispatcherMiddleware

tracekit.init("shop")

class Rows:
    def __init__(self, chunk, count):
        self.chunk, self.count = chunk, count

    def __iter__(self):
        for _ in range(self.count):
            yield self.chunk

    def close(self):
        raise ValueError("the export's cursor would not close")

def export(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/csv")])
    if environ["PATH_INFO"] == "/stream":  # far more than the client that leaves reads
        return Rows(b"rows\\n" * 13_000, 10_000)
    return Rows(b"rows\\n", 1)

app = DispatcherMiddleware(TracekitMiddleware(export), {"/metrics": wsgi_metrics_app()})
"""
DJANGO_APP = """
import os, tracekit
from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="test", DEBUG=False,
    MIDDLEWARE=["tracekit.django.TracekitMiddleware"],
)
from django.core.signals import request_finished
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path
from tracekit.metrics import wsgi_metrics_app
from tracekit.wsgi import TracekitMiddleware
from werkzeug.middleware.dispatcher import DispatcherMiddleware

def release_export_lock(sender, **kwargs):
    raise ValueError("the export's lock would not release")

request_finished.connect(release_export_lock)
urlpatterns = [path("export", lambda request: HttpResponse("rows\\n"))]
tracekit.init("shop")
site = get_wsgi_application()
if os.environ.get("WRAPPED"):  # wsgi.py wraps Django too
    site = TracekitMiddleware(site)
app = DispatcherMiddleware(site, {"/metrics": wsgi_metrics_app()})
"""
LOGGING = """
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"ids": {"()": "logging.Formatter", "defaults": {"correlation_id": "-"},
                           "fmt": "%(name)s [%(correlation_id)s] %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "ids"}},
    "root": {"handlers": ["out"], "level": "INFO"},
    "loggers": {"gunicorn.error": {"handlers": ["out"], "level": "INFO", "propagate": False}},
}
"""


def _serve(service: Service, source: str, worker: str = "sync", **env: str) -> str:
    service.write("app.py", source)
    service.write("logging_conf.py", LOGGING)
    port = free_port()
    service.start("-m", "gunicorn", "-c", "logging_conf.py", "-k", worker, "-w", "1",
                  "-b", f"127.0.0.1:{port}", "app:app", **env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/metrics")
    return url


def _export_answered_then_failed(service: Service, url: str, name: str) -> None:
    """``/export`` answered whole, counted without error; what its close raised is logged
    with the request's ID and is a failed span after the response."""
    answer = requests.get(url + "/export", headers={"X-Correlation-ID": "export-1"}, timeout=10)

    assert (answer.status_code, answer.text) == (200, "rows\n")
    assert served_counts(url, "GET") == {("200", ""): 1}
    assert service.terminate() == 0
    assert "gunicorn.error [export-1] Error handling request" in service.output()
    spans = [s for s in service.spans() if s.correlation_id == "export-1"]
    (request,) = server_spans(spans)
    (after,) = [s for s in spans if s is not request]
    assert (request.name, request.status) == (name, "UNSET")
    assert request.attributes["http.response.status_code"] == 200
    assert (after.name, after.kind, after.status) == (f"{name} after response", "INTERNAL", "ERROR")
    assert after.parent_span_id == request.span_id
    assert after.attributes["error.type"] == "ValueError"


@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_a_close_that_raises_leaves_the_answer_whole_and_fails_after_it(
    service: Service, worker: str
) -> None:
    url = _serve(service, APP, worker)
    _export_answered_then_failed(service, url, "GET")


@pytest.mark.parametrize("wrapped", ["", "1"], ids=["middleware", "wrapped-too"])
def test_a_django_request_finished_receiver_that_raises_fails_after_the_response(
    service: Service, wrapped: str
) -> None:
    """Django closes its response (``request_finished``) when the server closes it: a receiver
    that raises there was recorded nowhere and gunicorn's line showed no ID; with tracekit's
    WSGI middleware around Django too (wsgi.py), every response was cut."""
    url = _serve(service, DJANGO_APP, WRAPPED=wrapped)
    _export_answered_then_failed(service, url, "GET /export")


@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_a_close_that_raises_once_the_client_left_mid_stream_reaches_the_server(
    service: Service, worker: str
) -> None:
    """The server stops its loop over the body when the client has gone, and closes the
    response: the exception went, instead of to gunicorn ("Error handling request", with the
    request's ID, as without tracekit), to Python's "Exception ignored in: <generator ...>"."""
    url = _serve(service, APP, worker)
    _leave_mid_stream(url, "stream-1")

    service.wait_output("ValueError: the export's cursor would not close", 30)
    assert service.terminate() == 0
    assert "gunicorn.error [stream-1] Error handling request" in service.output()
    assert "Exception ignored" not in service.output()
    spans = [s for s in service.spans() if s.correlation_id == "stream-1"]
    (request,) = server_spans(spans)
    (after,) = [s for s in spans if s is not request]
    assert request.attributes["http.response.status_code"] == 200
    assert (after.name, after.status) == ("GET after response", "ERROR")
    assert after.attributes["error.type"] == "ValueError"


def _leave_mid_stream(url: str, correlation_id: str) -> None:
    """A client that reads the start of ``/stream``, then resets the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            f"GET /stream HTTP/1.1\r\nHost: shop\r\nX-Correlation-ID: {correlation_id}\r\n\r\n"
            .encode()
        )  # fmt: skip
        client.recv(65536)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
