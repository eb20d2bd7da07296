"""The metrics port under a development server's reloader: ``uvicorn.run("main:app",
reload=True)`` below an ``init()`` at the top of main.py (and ``fastapi dev``, which imports the
app's module to find the app), ``flask run --debug`` (werkzeug's reloader), which loads the app,
and ``manage.py runserver`` (Django's autoreloader), which loads its settings, do so in the
reloading process as well as in the child it starts, which serves the requests. An ``init()``
there ran in both, and the reloader held the port: the child warned that the port was
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

INIT = 'tracekit.init("shop", metrics_port=int(os.environ["METRICS_PORT"]), exporter="none")'
UVICORN_MAIN = f"""
    import os, sys
    import tracekit, uvicorn
    from tracekit.asgi import TracekitMiddleware

    {INIT}

    async def hello(scope, receive, send):
        if scope["type"] == "http":
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": b"ok"}})

    app = TracekitMiddleware(hello)

    if __name__ == "__main__":
        uvicorn.run("main:app", port=int(sys.argv[1]), reload=True, log_level="warning")
"""
FLASK_APP = f"""
    import os
    import tracekit, tracekit.flask
    from flask import Flask

    {INIT}
    app = Flask(__name__)
    tracekit.flask.init_app(app)

    @app.get("/")
    def hello():
        return "ok"
"""
DJANGO_SETTINGS = f"""
    import os
    import tracekit

    {INIT}
    SECRET_KEY = "only-for-this-test"
    ALLOWED_HOSTS = ["127.0.0.1"]
    ROOT_URLCONF = "urls"
    MIDDLEWARE = ["tracekit.django.TracekitMiddleware"]
"""
DJANGO_URLS = """
    from django.http import HttpResponse
    from django.urls import path

    urlpatterns = [path("", lambda request: HttpResponse("ok"))]
"""
COUNT = "http_server_request_duration_seconds_count{"


def test_the_worker_of_a_reloading_uvicorn_serves_the_metrics_port(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(textwrap.dedent(UVICORN_MAIN))
    port = free_port()
    _assert_the_serving_child_serves_metrics(tmp_path, ["main.py", str(port)], port)


def test_the_child_of_flask_run_debug_serves_the_metrics_port(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(FLASK_APP))
    port = free_port()
    command = ["-m", "flask", "--app", "app", "run", "--debug", "--port", str(port)]
    _assert_the_serving_child_serves_metrics(tmp_path, command, port)


def test_the_child_of_django_runserver_serves_the_metrics_port(tmp_path: Path) -> None:
    _assert_the_child_of_runserver_serves_metrics(tmp_path, textwrap.dedent(DJANGO_SETTINGS))


def test_the_child_of_django_runserver_serves_the_metrics_port_after_uninstrument(
    tmp_path: Path,
) -> None:
    """``tracekit.uninstrument()`` removes the client and queue patches, not the reloader's
    hook: the port is still served (until ``shutdown()``), so the child still needs it freed."""
    settings = textwrap.dedent(DJANGO_SETTINGS) + "tracekit.uninstrument()\n"
    _assert_the_child_of_runserver_serves_metrics(tmp_path, settings)


def _assert_the_child_of_runserver_serves_metrics(folder: Path, settings: str) -> None:
    (folder / "settings.py").write_text(settings)
    (folder / "urls.py").write_text(textwrap.dedent(DJANGO_URLS))
    port = free_port()
    command = ["-m", "django", "runserver", f"127.0.0.1:{port}", "--settings", "settings"]
    _assert_the_serving_child_serves_metrics(folder, command, port)


def _assert_the_serving_child_serves_metrics(folder: Path, command: list[str], port: int) -> None:
    """Run ``python COMMAND`` in ``folder``, send it one request, and find it in a scrape."""
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(METRICS_PORT=str(metrics_port), PYTHONPATH=str(folder))
    process = subprocess.Popen(
        [sys.executable, *command], cwd=folder, env=env, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
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
