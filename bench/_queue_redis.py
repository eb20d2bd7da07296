"""Redis streams with redis-py against a private ``redis-server`` on loopback.

A round appends N entries to a fresh stream with ``XADD`` (a correlation ID current), then reads
them back with ``XREAD`` in batches of 500 and hands each entry to a handler. Every stack reads
the reply with the same loop; tracekit's stacks wrap each handler call in
``tracekit.instrumentation.redis.consume_entry``, the CONSUMER span the user opens.

OpenTelemetry's redis instrumentation traces commands, not hops: a CLIENT span per ``XADD`` and
per ``XREAD`` (one per batch), no context in the entries, nothing around the handler. Its row is
the price of that, not a peer of tracekit's hop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench._queue_stacks import CORRELATION, CORRELATION_ID, FULL, CpuClock, Instrumentation
from tracekit import correlation

FIELDS = {"order": "4711", "sku": "A-1"}
BATCH = 500


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_redis() -> Iterator[int]:
    """A throw-away redis-server (no persistence) on a free port; yields the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = _free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    server = subprocess.Popen([*command, "no"], stdout=subprocess.DEVNULL)
    try:
        _wait_for(port, server)
        yield port
    finally:
        server.terminate()
        server.wait(10)


def _wait_for(port: int, server: subprocess.Popen[bytes]) -> None:
    import redis

    deadline = time.monotonic() + 10
    while server.poll() is None and time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


class RedisStreams:
    """``XADD`` and ``XREAD`` with a handler per entry."""

    name = "Redis streams (redis-py)"
    peer = "OpenTelemetry redis (commands)"
    hop_peer = False

    def __init__(self, port: int) -> None:
        self.port = port

    def tracekit(self) -> Instrumentation:
        from tracekit.instrumentation.redis import RedisInstrumentor

        return RedisInstrumentor()

    def opentelemetry(self) -> Instrumentation:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        return RedisInstrumentor()  # type: ignore[no-any-return]

    def run(self, stack: str, messages: int, cpu: CpuClock) -> tuple[float, float]:
        import redis

        client = redis.Redis(port=self.port)
        stream = f"tracekit-bench-{uuid.uuid4().hex[:8]}"
        try:
            publish = _publish(client, stream, messages, cpu)
            return publish, _consume(client, stream, messages, cpu, stack in (FULL, CORRELATION))
        finally:
            client.delete(stream)
            client.close()


def _publish(client: Any, stream: str, messages: int, cpu: CpuClock) -> float:
    token = correlation.set_correlation_id(CORRELATION_ID)
    cpu.start()
    for _ in range(messages):
        client.xadd(stream, FIELDS)
    elapsed = cpu.stop()
    correlation.reset_correlation_id(token)
    return elapsed


def _consume(client: Any, stream: str, messages: int, cpu: CpuClock, traced: bool) -> float:
    from tracekit.instrumentation.redis import consume_entry

    handled = 0
    last = "0"
    cpu.start()
    while handled < messages:
        for name, entries in client.xread({stream: last}, count=BATCH, block=1000) or ():
            for entry_id, fields in entries:
                if traced:
                    with consume_entry(name, entry_id, fields):
                        handled += 1
                else:
                    handled += 1
                last = entry_id
    return cpu.stop()
