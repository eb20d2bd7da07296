"""``python -m bench.queue_bench`` ends by measuring each part of a queue hop in process
(``bench/_queue_parts.py``): every part must still run against the library as it is now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: the benchmark makes its tracer provider the global one.
_MEASURE_A_FEW = """
import json
from bench import _queue_parts
from bench._queue_stacks import providers
print(json.dumps(_queue_parts.parts(providers(), n=3, rounds=1)))
"""


def test_every_part_of_a_queue_hop_is_measured() -> None:
    """The consumer span's part called the consumer's attributes without the time they are
    reckoned at (needed since the scheduled delay): every run of the queue benchmark, the
    Kafka one included, ended in a TypeError after its brokers' rounds."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE_A_FEW],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.splitlines()[-1])
    assert set(measured) == {"full", "correlation", "opentelemetry"}
    assert "consume span" in measured["full"]
    assert all(value >= 0 for value in measured["full"].values())
