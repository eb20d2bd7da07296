"""A client that leaves during its chunked upload to a WSGI app under real gunicorn: reading
``wsgi.input`` raises gunicorn's ``NoMoreData``, which gunicorn takes for a client gone and
answers with nothing (Flask answers it with its 500, to no one). That is the client's doing,
as a client leaving an ASGI app's upload is: a ``499`` without error, where it was a failed
request (no status and ``error_type="NoMoreData"``, or Flask's 500) in the error ratio.
"""

from __future__ import annotations

import socket
import time

import pytest
from conditions import wait_for
from loopback import free_port
from metric_labels import served_counts
from stopping import Service, server_spans

APPS = {
    "wsgi": """
def read_all(environ, start_response):
    stream, size = environ["wsgi.input"], 0
    while chunk := stream.read(65536):
        size += len(chunk)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(size).encode()]
""",
    "flask": """
import flask
read_all = flask.Flask("shop")

@read_all.post("/upload")
def upload():
    return str(len(flask.request.get_data()))
""",
}
SERVED = """
import tracekit, tracekit.flask
from tracekit.metrics import wsgi_metrics_app
from tracekit.wsgi import TracekitMiddleware
from werkzeug.middleware.dispatcher import DispatcherMiddleware

tracekit.init("shop")
traced = TracekitMiddleware(read_all)
app = DispatcherMiddleware(traced, {"/metrics": wsgi_metrics_app()})
"""


def _leave_mid_upload(port: int, correlation_id: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n"
            + f"X-Correlation-ID: {correlation_id}\r\n\r\n".encode()
            + b"10000\r\n" + b"y" * 0x10000 + b"\r\n"  # one chunk of many, then gone
        )  # fmt: skip
        time.sleep(0.2)  # the app is reading the next chunk


@pytest.mark.parametrize(("app", "worker"), [("wsgi", "sync"), ("flask", "gthread")])
def test_a_client_leaving_its_chunked_upload_is_a_499_without_error(
    service: Service, app: str, worker: str
) -> None:
    service.write("app.py", APPS[app] + SERVED)
    port = free_port()
    service.start("-m", "gunicorn", "-k", worker, "-w", "1", "-b", f"127.0.0.1:{port}", "app:app")
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/metrics")

    _leave_mid_upload(port, "upload-1")

    wait_for(lambda: served_counts(url, "POST"), 10, "the upload counted")
    assert served_counts(url, "POST") == {("499", ""): 1}
    assert service.terminate() == 0
    (upload,) = [s for s in server_spans(service.spans()) if s.correlation_id == "upload-1"]
    assert upload.status == "UNSET"
    assert upload.attributes["http.response.status_code"] == 499
    assert "error.type" not in upload.attributes
    assert not upload.events  # no exception recorded
