"""The metrics port under werkzeug's reloader: ``flask run --debug`` (and ``app.run(debug=True)``)
loads the app, so runs ``init()``, in the reloading process as well as in the child it starts,
which serves the requests. The reloader held the port: the child warned that the port was
unavailable, and scrapes showed the reloader's metrics, without a single request."""

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

APP = """
    import os
    import tracekit, tracekit.flask
    from flask import Flask

    tracekit.init("orders", metrics_port=int(os.environ["METRICS_PORT"]), exporter="none")
    app = Flask(__name__)
    tracekit.flask.init_app(app)

    @app.get("/")
    def hello():
        return "ok"
"""
COUNT = "http_server_request_duration_seconds_count{"


def test_the_child_of_flask_run_debug_serves_the_metrics_port(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["METRICS_PORT"] = str(metrics_port)
    flask = [sys.executable, "-m", "flask", "--app", "app", "run", "--debug", "--port", str(port)]
    process = subprocess.Popen(
        flask, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for_port(port, process, timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "ok"

        def counted() -> list[str]:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            return [line for line in text.splitlines() if line.startswith(COUNT)]

        [line] = wait_for(counted, 10, "the child's request in a scrape", ignoring=UNREACHABLE)
        assert 'http_response_status_code="200"' in line and line.endswith(" 1.0")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert "unavailable" not in stderr
