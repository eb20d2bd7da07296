"""Run ``tracekit collector`` as a real subprocess and find the port it bound."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ENTRY = [sys.executable, "-c", "from tracekit_cli.main import main; main()", "collector"]
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def start_collector(store: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """Start the collector on a free port; returns the process and its port."""
    process = subprocess.Popen(
        [*ENTRY, "--port", "0", "--store", str(store), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    match = _LISTENING.search(line)
    assert match, (
        f"collector did not start: {line!r} {process.stderr.read() if process.stderr else ''}"
    )
    return process, int(match.group(1))
