"""The pinned OpenTelemetry JS SDK (``js_sdk/``) and the services the tests start beside it."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import signal
import subprocess
from pathlib import Path

from conditions import need

JS = Path(__file__).parent / "js_sdk"


def _required(what: str) -> str:
    found = shutil.which(what)
    need(found is not None, what)
    assert found is not None
    return found


def installed_node() -> str:
    """The node binary, with the pinned SDK installed by ``npm ci`` (again if the lock changed).

    One test process installs while the others wait (an exclusive lock on package-lock.json):
    ``npm ci`` first deletes node_modules, so in a fresh clone under ``pytest -n 3`` one
    process's install removed what another's had just put there, and that one's tests could not
    find the SDK (``Cannot find module '@opentelemetry/api'``) or its ``npm ci`` failed."""
    binary, npm = _required("node"), _required("npm")
    with (JS / "package-lock.json").open("rb") as package_lock:
        fcntl.flock(package_lock, fcntl.LOCK_EX)  # released when the file closes
        lock = hashlib.sha256(package_lock.read()).hexdigest()
        stamp = JS / "node_modules" / ".tracekit-lock-sha256"
        if not stamp.is_file() or stamp.read_text() != lock:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
                timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, f"npm ci failed: {done.stderr[-2000:]}"
            stamp.write_text(lock)
    return binary


def start_service(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a service that prints a line starting with "listening" once it accepts requests."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening"), f"{command[:2]} did not start: {process.stderr.read()}"  # type: ignore[union-attr]
    return process


def stop_service(process: subprocess.Popen[str], exit_code: int = 0) -> str:
    """Stop a service with SIGTERM, as its platform would; it must end with ``exit_code``
    (uvicorn, once shut down, raises SIGTERM again: -SIGTERM). Returns its stderr."""
    process.send_signal(signal.SIGTERM)
    code = process.wait(30)
    errors = process.stderr.read() if process.stderr else ""
    assert code == exit_code, errors
    return errors
