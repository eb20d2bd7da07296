"""``tracekit`` run as a user runs it, in a process of its own: its exit code, and what it
writes on stdout and stderr, as a terminal shows them. 100 columns wide, with no backend
headers from the environment that runs the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))


def tracekit(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tracekit *args`` to its end (at most a minute)."""
    return subprocess.run(
        [TRACEKIT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": ""},
    )
