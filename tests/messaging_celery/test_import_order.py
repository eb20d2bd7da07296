"""Celery imported after ``tracekit.init()``, by whatever module of it the application imports
first (fresh interpreters; a real redis-server as the broker)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = """
import sys
import tracekit

tracekit.init("shop", exporter="none")
{first_import}
from celery import Celery
from celery.canvas import group

app = Celery("shop", broker=sys.argv[1], set_as_current=False)
app.conf.task_default_queue = "import-order"

@app.task(name="shop.charge")
def charge(order):
    pass

group(charge.s(1), charge.s(2)).apply_async()
with app.connection() as connection:
    queue = connection.SimpleQueue("import-order")
    for _ in range(2):
        message = queue.get(timeout=10)
        print(message.headers.get("traceparent", "-"))
        message.ack()
    queue.close()
"""


@pytest.mark.parametrize(
    "first_import",
    [
        "from celery.canvas import chain",
        "from celery.result import AsyncResult",
        "import celery.worker.consumer.consumer",
        "import celery",
    ],
)
def test_a_group_is_traced_whichever_celery_module_is_imported_first(
    redis_url: str, first_import: str
) -> None:
    """``from celery.canvas import ...`` as the first import of Celery imports the app while
    canvas is half made: tracekit's patch of the app failed there, logged a traceback, and
    Celery went untraced for good (no trace headers in any task message, no spans)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env.update(TRACEKIT_METRICS_PORT="0", TRACEKIT_EXPORT_LOGS="false")
    script = textwrap.dedent(CHILD).format(first_import=first_import)
    result = subprocess.run(
        [sys.executable, "-c", script, redis_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "tracekit" not in result.stderr
    traceparents = result.stdout.split()
    assert len(traceparents) == 2 and "-" not in traceparents
    # one trace: the group's span is the parent of both publishes
    assert len({traceparent.split("-")[1] for traceparent in traceparents}) == 1
