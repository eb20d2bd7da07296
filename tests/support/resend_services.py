"""Real services that redirect and fail before they answer, each a process of its own exporting
into one store (``TRACEKIT_EXPORTER=store``), as a user runs them.

``back`` (Flask, ``tracekit.flask.init_app``): ``/item/old`` redirects (302) to ``/item/new``,
``/away`` to ``other``'s ``/done`` (another service), ``/flaky/<key>?fail=N`` answers 503 to the
first N requests for ``key``, then 200, and ``/to-flaky/<key>`` redirects there (fail=1).
``front`` (Flask) calls ``back`` at ``/call/<client>/<path>`` with requests (a ``Retry`` on
503 in its adapter), httpx, urllib3 (a ``Retry`` on 503) or aiohttp, or ``sdk``: requests
inside an SDK's own CLIENT span (``sdk.fetch``, a backoff of 0.2 s before its second retry).
``script`` runs the same call from a process with no request under way (a cron job): it begins
the trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conditions import wait_for

from tracekit.records import BackendError
from tracekit.store import Store

SERVICE = textwrap.dedent(
    """
    import asyncio, os, sys
    import flask
    import tracekit, tracekit.flask
    from werkzeug.serving import make_server

    NAME = sys.argv[1]
    tracekit.init(NAME)
    RETRY = dict(total=3, status_forcelist=[503], backoff_factor=0, allowed_methods=None)
    app = flask.Flask(NAME)
    tracekit.flask.init_app(app)
    seen = {}

    def call(client, url):
        import aiohttp, httpx, requests, urllib3
        from requests.adapters import HTTPAdapter
        from urllib3.util import Retry
        if client == "sdk":  # an SDK's own CLIENT span around the requests it makes
            from opentelemetry import trace
            tracer = trace.get_tracer("sdk")
            retry = Retry(**{**RETRY, "backoff_factor": 0.1})  # 0 s, then 0.2 s
            with tracer.start_as_current_span("sdk.fetch", kind=trace.SpanKind.CLIENT):
                with requests.Session() as session:
                    session.mount("http://", HTTPAdapter(max_retries=retry))
                    return session.get(url, timeout=10).status_code
        if client == "requests":
            with requests.Session() as session:
                session.mount("http://", HTTPAdapter(max_retries=Retry(**RETRY)))
                return session.get(url, timeout=10).status_code
        if client == "httpx":
            with httpx.Client(follow_redirects=True) as session:
                return session.get(url).status_code
        if client == "urllib3":
            with urllib3.PoolManager(retries=Retry(**RETRY)) as pool:
                return pool.request("GET", url).status
        async def go():
            async with aiohttp.ClientSession() as session, session.get(url) as answer:
                await answer.read()
                return answer.status
        return asyncio.run(go())

    @app.route("/item/<name>")
    def item(name):
        return flask.redirect("/item/new", 302) if name == "old" else "item"

    @app.route("/away")
    def away():
        return flask.redirect(os.environ["OTHER"] + "/done", 302)

    @app.route("/done")
    def done():
        return "done"

    @app.route("/flaky/<key>")
    def flaky(key):
        seen[key] = seen.get(key, 0) + 1
        return ("busy", 503) if seen[key] <= int(flask.request.args.get("fail", "1")) else "ok"

    @app.route("/to-flaky/<key>")
    def to_flaky(key):
        return flask.redirect(f"/flaky/{key}?fail=1", 302)

    @app.route("/call/<client>/<path:path>")
    def front(client, path):
        query = flask.request.query_string.decode()
        url = os.environ["BACK"] + "/" + path + ("?" + query if query else "")
        return f"{call(client, url)}"

    if NAME == "script":
        print(call(sys.argv[2], os.environ["BACK"] + sys.argv[3]), flush=True)
        tracekit.shutdown()
        sys.exit(0)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()
    """
)


def _environment(store: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(store),
        "TRACEKIT_METRICS_PORT": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **more,
    }


@contextmanager
def resend_services(store: Path) -> Iterator[dict[str, str]]:
    """Start ``other``, ``back`` and ``front``; their base URLs by name, until the block ends."""
    urls: dict[str, str] = {}
    started: list[subprocess.Popen[str]] = []
    try:
        for name, needs in (
            ("other", {}),
            ("back", {"OTHER": "other"}),
            ("front", {"BACK": "back"}),
        ):
            env = _environment(store, **{key: urls[value] for key, value in needs.items()})
            process = subprocess.Popen(
                [sys.executable, "-c", SERVICE, name], env=env, stdout=subprocess.PIPE, text=True
            )
            started.append(process)
            assert process.stdout is not None
            urls[name] = f"http://127.0.0.1:{int(process.stdout.readline())}"
        yield urls
    finally:
        for process in started:
            process.terminate()
            process.wait(10)


def run_script(store: Path, back: str, client: str, path: str) -> str:
    """Call ``back`` at ``path`` from a process with no request under way; what it answered."""
    env = _environment(store, BACK=back)
    done = subprocess.run(
        [sys.executable, "-c", SERVICE, "script", client, path],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def stored(store_path: Path, request: str, count: int, *, by_trace: bool = False) -> None:
    """Wait until the traces of ``request`` (its correlation ID, or ``by_trace`` its trace id)
    hold ``count`` spans in the store (a server reached by a redirect to another origin is
    sent no correlation header)."""

    def spans() -> int:
        with Store(store_path) as store:
            found = store.spans_by_correlation_id(request) if not by_trace else []
            traces = {s.trace_id for s in found} if not by_trace else {request}
            return len(store.spans_by_trace_ids(traces)) if traces else 0

    what = f"{count} spans of {request}"
    wait_for(lambda: spans() >= count, 20, what, ignoring=(BackendError,))
