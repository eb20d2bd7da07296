"""Run the W3C Trace Context test harness against a tracekit service.

The harness (``test/`` of the public w3c/trace-context repository) is not part of tracekit: clone
it anywhere and point this script at the clone::

    git clone https://github.com/w3c/trace-context /tmp/trace-context
    .venv/bin/python tools/w3c_harness.py /tmp/trace-context          # all 41 tests, level 2
    .venv/bin/python tools/w3c_harness.py /tmp/trace-context AdvancedTest   # one suite

It starts the test service in a child process: a Starlette app behind tracekit's ASGI middleware,
served by uvicorn, whose ``POST /test`` calls back every URL the harness names with ``requests``
(instrumented by ``tracekit.init``), sending the arguments as the JSON body. The harness then runs
with ``SPEC_LEVEL=2`` and ``STRICT_LEVEL=2``; the exit status is the harness's (0: all passed).
The harness needs aiohttp (a dev dependency of tracekit).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def service() -> Any:
    """The ASGI test service the harness posts to."""
    import requests
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    import tracekit
    from tracekit.asgi import TracekitMiddleware

    tracekit.init("w3c-harness", exporter="none", metrics_port=0, export_logs=False)
    session = requests.Session()

    def call_back(calls: list[dict[str, Any]]) -> None:
        for call in calls:
            session.post(call["url"], json=call["arguments"], timeout=5)

    async def test(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(call_back, await request.json())
        return Response(status_code=200)

    return TracekitMiddleware(Starlette(routes=[Route("/test", test, methods=["POST"])]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[1]); import w3c_harness;"
        "uvicorn.run(w3c_harness.service(), port=int(sys.argv[2]), log_level='warning')"
    )
    tools = str(Path(__file__).resolve().parent)
    process = subprocess.Popen([sys.executable, "-c", code, tools, str(port)])
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the test service did not start") from None
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    """Serve, run the harness (with any test names given after the clone), stop serving."""
    if not argv or not (Path(argv[0]) / "test" / "test.py").is_file():
        print(__doc__, file=sys.stderr)
        return 2
    port, harness_port = _free_port(), _free_port()
    process = _serve(port)
    env = {**os.environ, "SPEC_LEVEL": "2", "STRICT_LEVEL": "2", "HARNESS_PORT": str(harness_port)}
    try:
        return subprocess.call(
            [sys.executable, "test.py", f"http://127.0.0.1:{port}/test", *argv[1:]],
            cwd=Path(argv[0]) / "test",
            env=env,
        )
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
