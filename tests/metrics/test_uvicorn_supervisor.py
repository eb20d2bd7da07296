"""The metrics port under uvicorn's supervisor: ``uvicorn.run("main:app", reload=True)`` below
an ``init()`` at the top of main.py (and ``fastapi dev``, which imports the app's module to find
the app) runs ``init`` in the reloader process as well as in the worker it starts. The reloader
held the port: the worker, which serves the requests, warned that the port was unavailable and
never served it, and scrapes showed the reloader's metrics, without a single request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from conditions import wait_for
from loopback import UNREACHABLE, free_port, wait_for_port

MAIN = """
    import sys
    import tracekit, uvicorn
    from tracekit.asgi import TracekitMiddleware

    tracekit.init("shop", metrics_port=int(sys.argv[2]), exporter="none")

    async def hello(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    app = TracekitMiddleware(hello)

    if __name__ == "__main__":
        uvicorn.run("main:app", port=int(sys.argv[1]), reload=True, log_level="warning")
"""
COUNT = "http_server_request_duration_seconds_count{"


def test_the_worker_of_a_reloading_uvicorn_serves_the_metrics_port(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "main.py", str(port), str(metrics_port)]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for_port(port, process, timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "ok"

        def counted() -> list[str]:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            return [line for line in text.splitlines() if line.startswith(COUNT)]

        [line] = wait_for(counted, 10, "the worker's request in a scrape", ignoring=UNREACHABLE)
        assert 'http_response_status_code="200"' in line and line.endswith(" 1.0")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert "unavailable" not in stderr
