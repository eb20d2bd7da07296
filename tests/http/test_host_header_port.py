"""A client's Host header as a WSGI server's port: gunicorn on a unix socket (behind nginx, the
usual production setup) fills ``SERVER_NAME`` and ``SERVER_PORT`` from it.

Real gunicorn on a unix socket, real OTLP/HTTP export into a real receiver and store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from conditions import wait_for

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

APP = """
    import tracekit
    from tracekit.wsgi import TracekitMiddleware

    tracekit.init("hosts")

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = TracekitMiddleware(hello)
"""


def _get(sock_path: Path, host: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(sock_path))
        client.sendall(b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        return client.recv(100).split(b"\r\n")[0]


def test_a_host_header_port_that_is_no_port_number_leaves_the_span_whole(tmp_path: Path) -> None:
    """``Host: b:²`` (latin-1 0xB2: a digit to ``str.isdigit``, not to ``int``) left its request
    untraced, with tracekit's warning and a traceback on gunicorn's stderr; ``Host: c:`` and 23
    nines failed the OTLP encoding of the span's ``server.port``, a traceback on every export.
    Every request now has its span; ``server.port`` only where it is a port number."""
    (tmp_path / "hosts_app.py").write_text(textwrap.dedent(APP))
    sock_path, log = tmp_path / "g.sock", tmp_path / "gunicorn.log"
    config = ReceiverConfig(port=0, grpc_port=None)
    with Receiver(Store(tmp_path / "collector.db"), config) as receiver:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "TRACEKIT_METRICS_PORT": "0",
            "TRACEKIT_EXPORT_LOGS": "false",
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"unix:{sock_path}",
                 "--chdir", str(tmp_path), "hosts_app:app"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_for(sock_path.exists, 30, "gunicorn's socket")
            hosts = [b"a.example:8000", b"b.example:\xb2", b"c.example:" + b"9" * 23]
            assert [_get(sock_path, host) for host in hosts] == [b"HTTP/1.1 200 OK"] * 3
            spans = wait_for(
                lambda: len(found := receiver.store.spans_since(0)) == 3 and found, 30, "spans"
            )
        finally:
            process.terminate()
            process.wait(20)
    ports = {s.attributes["server.address"]: s.attributes.get("server.port") for s in spans}
    assert ports == {"a.example": 8000, "b.example": None, "c.example": None}
    output = log.read_text()
    assert "Traceback" not in output and "tracekit:" not in output, output
