"""``tracekit.correlation.set_correlation_id`` with a value the application did not validate.

Applications call it with IDs of their own (a job's, a message's from a transport tracekit does
not patch). A value that is not a valid correlation ID went into every log line and every
outgoing request as it was: a line break forged log lines, and the application's own HTTP call
raised (``Invalid header value``) where it worked without tracekit. It is now replaced by a new
ID, with a rate-limited warning that never quotes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = """
    import http.server, logging, sys, threading
    import requests, tracekit
    from tracekit.correlation import correlation_id, set_correlation_id

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            print("received", self.headers.get("X-Correlation-ID"), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tracekit.init("jobs", exporter="none", metrics_port=0)
    logging.basicConfig(format="%(levelname)s [%(correlation_id)s] %(message)s", stream=sys.stdout)
    set_correlation_id(sys.argv[1])
    logging.getLogger("jobs").warning("job started")
    answer = requests.get(f"http://127.0.0.1:{server.server_port}/", timeout=10)
    print("status", answer.status_code, "current", correlation_id(), flush=True)
"""


def _run(value: str) -> tuple[list[str], str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), value],
        env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), result.stderr


def test_a_valid_id_is_used_as_given() -> None:
    lines, _ = _run("job-42")
    assert lines == ["WARNING [job-42] job started", "received job-42", "status 204 current job-42"]


def test_an_invalid_id_never_reaches_a_log_line_or_a_header() -> None:
    lines, stderr = _run("job-42\r\nWARNING [admin] password changed")
    warning, log_line, received, status = lines
    assert warning.startswith("WARNING [-] tracekit: set_correlation_id() refused a correlation ID")
    assert "admin" not in warning  # the value is never quoted
    new_id = status.removeprefix("status 204 current ")
    assert len(new_id) == 32 and new_id.isalnum()
    assert log_line == f"WARNING [{new_id}] job started"
    assert received == f"received {new_id}"
    assert "Traceback" not in stderr
