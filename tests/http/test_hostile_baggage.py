"""Hostile baggage through real servers (uvicorn, werkzeug, gunicorn): the app gets the valid
members, and the server's whole log output (every logger at DEBUG) holds no raw control byte and
no part of a refused value.
"""

from __future__ import annotations

import json
import re

import pytest
from loopback import free_port
from rawhttp import send
from stopping import Service

APP = """
import json, logging, os, tracekit
from opentelemetry import baggage

logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")
tracekit.init("hostile", public_endpoint=os.environ.get("PUBLIC") == "1")

def seen():
    kept = dict(baggage.get_all())
    return json.dumps({"members": len(kept), "ok": kept.get("ok"),
                       "correlation_id": tracekit.correlation_id()}).encode()

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": seen()})

def wsgi(environ, start_response):
    start_response("200 OK", [])
    return [seen()]

from tracekit.asgi import TracekitMiddleware as Asgi
from tracekit.wsgi import TracekitMiddleware as Wsgi
asgi_app, wsgi_app = Asgi(asgi), Wsgi(wsgi)
"""

SERVE_WERKZEUG = """
import sys
from werkzeug import serving
from werkzeug.serving import make_server
serving._log_add_style = False  # werkzeug colours its own 4xx lines with ANSI codes: not ours
from app import wsgi_app
make_server("127.0.0.1", int(sys.argv[1]), wsgi_app, threaded=True).serve_forever()
"""

MANY = ",".join(f"k{i}=v{i}" for i in range(10_000)).encode()  # 128 KiB
HOSTILE: list[tuple[str, list[bytes], int]] = [
    # (case, baggage header lines, members the app should see)
    ("raw escape sequence", [b"baggage: k=\x1b]0;pwned\x07,ok=1"], 1),
    ("percent-encoded escapes", [b"baggage: k=%1B%5D0%3Bpwned%07,ok=1"], 2),
    ("9 KB of junk", [b"baggage: ok=1,k=" + b"\x7fpwned" * 1500], 1),
    ("quoted value", [b'baggage: ok=1,k="pwned"'], 1),
    ("10,000 members", [b"baggage: ok=1," + MANY], 64),
    ("repeated headers", [b"baggage: ok=1", b"baggage: k=pwned\x0b"], 1),
]
SERVERS = {
    "uvicorn": ("-m", "uvicorn", "app:asgi_app", "--port", "{port}", "--log-level", "debug"),
    "werkzeug": ("serve.py", "{port}"),
    "gunicorn": ("-m", "gunicorn", "-b", "127.0.0.1:{port}", "app:wsgi_app"),
}
CONTROL_BYTES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@pytest.mark.parametrize("public", [False, True], ids=["trusting", "public-endpoint"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_hostile_baggage_never_reaches_the_log(service: Service, server: str, public: bool) -> None:
    service.write("app.py", APP)
    service.write("serve.py", SERVE_WERKZEUG)
    port = free_port()
    service.start(
        *(arg.format(port=port) for arg in SERVERS[server]),
        PUBLIC="1" if public else "0", TRACEKIT_EXPORTER="console",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    service.wait_http(url)

    answered = []
    for case, lines, expected in HOSTILE:
        # A server may refuse control characters or huge headers itself (400, 431): fine. One
        # that closes on a head it has not read all of can have its answer lost to the reset.
        try:
            response = send(url, lines)
        except ConnectionResetError:
            continue
        if response.status != 200:
            assert response.status in (400, 431), case
            continue
        answered.append(case)
        seen = json.loads(response.body)
        assert seen["members"] == (0 if public else expected), case
        assert seen["ok"] == (None if public else "1"), case
    assert "percent-encoded escapes" in answered and "quoted value" in answered

    service.kill()
    output = service.output()
    assert "pwned" not in output
    assert not CONTROL_BYTES.search(output), CONTROL_BYTES.findall(output)[:5]
    dropped = [line for line in output.splitlines() if "dropped members" in line]
    assert all("baggage header" in line for line in dropped)  # naming the header only
    logged = [line for line in dropped if line.startswith("WARNING tracekit")]
    assert len(logged) == (0 if public else 1)  # rate-limited (the console exporter may echo it)
