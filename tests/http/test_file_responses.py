"""A WSGI app answering with the server's ``wsgi.file_wrapper`` (Flask's ``send_file``) keeps the
server's fast path: gunicorn sends such a response with ``sendfile`` only when the iterable it gets
back is an instance of its own wrapper, and tracekit's middleware sits between the two.
"""

from __future__ import annotations

import requests
from loopback import free_port
from stopping import Service, server_spans

APP = """
import socket, tracekit
from tracekit.wsgi import TracekitMiddleware

tracekit.init("files")
SENT = []
_sendfile = socket.socket.sendfile

def counting_sendfile(self, file, *args, **kwargs):
    SENT.append(file.name)
    return _sendfile(self, file, *args, **kwargs)

socket.socket.sendfile = counting_sendfile

def app(environ, start_response):
    if environ["PATH_INFO"] == "/sendfile-calls":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(SENT)).encode()]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](open("payload.bin", "rb"), 65536)

wsgi_app = TracekitMiddleware(app)
"""
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def test_a_file_response_is_sent_by_gunicorn_with_sendfile_and_traced(service: Service) -> None:
    service.write("app.py", APP)
    (service.workdir / "payload.bin").write_bytes(PAYLOAD)
    port = free_port()
    service.start("-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "app:wsgi_app")
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/sendfile-calls")

    response = requests.get(url + "/report.bin", headers={"X-Correlation-ID": "file-1"}, timeout=10)
    calls = requests.get(url + "/sendfile-calls", timeout=10).text

    assert response.status_code == 200
    assert response.content == PAYLOAD
    assert response.headers["X-Correlation-ID"] == "file-1"
    assert calls == "1"  # the file went out through sendfile, not read and written in chunks
    assert service.terminate() == 0
    spans = {span.attributes.get("url.path"): span for span in server_spans(service.spans())}
    assert spans["/report.bin"].attributes["correlation.id"] == "file-1"
    assert spans["/report.bin"].attributes["http.response.status_code"] == 200
