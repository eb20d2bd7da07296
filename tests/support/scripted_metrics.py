"""Run a script that serves tracekit in a fresh interpreter and prints a scrape of its metrics.

``init``, ``shutdown`` and the global registry belong to the process, so tests of what they do
to the metrics run their service in a child: ``sys.argv[1]`` is a free loopback port for the
metrics, ``tests/support`` is importable, no ``OTEL_*``/``TRACEKIT_*`` variable leaks in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loopback import free_port
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

SUPPORT = Path(__file__).resolve().parent


def script_output(script: str, **env: str) -> str:
    """What ``script`` prints, run with ``env`` added; fails on a failed run."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    clean["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script, str(free_port())],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def metrics_printed_by(script: str, **env: str) -> dict[str, Metric]:
    """The metric families of the scrape ``script`` prints, by name."""
    scrape = script_output(script, **env)
    return {family.name: family for family in text_string_to_metric_families(scrape)}
