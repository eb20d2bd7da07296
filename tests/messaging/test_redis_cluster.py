"""Stream entries written through a Redis Cluster's pipelines (a real cluster of three
redis-server nodes on loopback, made by ``redis-cli --cluster create``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis_server import running_redis_cluster
from venvs import pip_install


@pytest.fixture(scope="module")
def cluster_port() -> Iterator[int]:
    with running_redis_cluster() as port:
        yield port


def producer_outcomes(spans: InMemorySpanExporter) -> list[tuple[str, StatusCode, Any]]:
    """(name, status, entry ID) of each PRODUCER span, in the order the XADDs were queued."""
    producers = sorted(
        (s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER),
        key=lambda s: s.start_time or 0,
    )
    return [
        (s.name, s.status.status_code, (s.attributes or {}).get("messaging.message.id"))
        for s in producers
    ]


def entry_ids(client: RedisCluster, stream: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(stream)]


@pytest.mark.parametrize("transaction", [False, True], ids=["plain", "multi-exec"])
def test_a_refused_xadd_in_a_cluster_pipeline_fails_only_its_own_span(
    cluster_port: int, spans: InMemorySpanExporter, transaction: bool
) -> None:
    """A cluster pipeline raises the first command Redis refused once every node has answered
    (MULTI/EXEC too, which runs the others): the other entries were written, but every XADD's
    span was failed with that error."""
    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    tag = "{" + uuid.uuid4().hex[:8] + "}"  # one hash slot: a cluster transaction needs it
    stream, wrong_type = f"piped-{tag}", f"string-{tag}"
    client.set(wrong_type, "not a stream")
    pipeline = client.pipeline(transaction=transaction)
    pipeline.xadd(stream, {"order": "1"})
    pipeline.xadd(wrong_type, {"order": "2"})
    pipeline.xadd(stream, {"order": "3"})
    with pytest.raises(redis.ResponseError, match="Command # 2"):
        pipeline.execute()
    client.close()
    _only_the_refused_failed(cluster_port, spans, stream, wrong_type)


@pytest.mark.parametrize("transaction", [False, True], ids=["plain", "multi-exec"])
def test_a_refused_xadd_in_an_asyncio_cluster_pipeline_fails_only_its_own_span(
    cluster_port: int, spans: InMemorySpanExporter, transaction: bool
) -> None:
    """The asyncio cluster pipeline, the same: the entries written have spans that say so."""
    tag = "{" + uuid.uuid4().hex[:8] + "}"
    stream, wrong_type = f"piped-{tag}", f"string-{tag}"

    async def run() -> None:
        client = AsyncRedisCluster(host="127.0.0.1", port=cluster_port)
        await client.set(wrong_type, "not a stream")
        pipeline = client.pipeline(transaction=transaction)
        pipeline.xadd(stream, {"order": "1"})
        pipeline.xadd(wrong_type, {"order": "2"})
        pipeline.xadd(stream, {"order": "3"})
        with pytest.raises(redis.ResponseError, match="Command # 2"):
            await pipeline.execute()
        await client.aclose()

    asyncio.run(run())
    _only_the_refused_failed(cluster_port, spans, stream, wrong_type)


def _only_the_refused_failed(
    cluster_port: int, spans: InMemorySpanExporter, stream: str, wrong_type: str
) -> None:
    """The pipeline's two entries were written and their spans say so; only the XADD to the
    key of the wrong type failed."""
    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    written = entry_ids(client, stream)
    client.delete(stream, wrong_type)
    client.close()
    assert len(written) == 2
    assert producer_outcomes(spans) == [
        (f"send {stream}", StatusCode.UNSET, written[0]),
        (f"send {wrong_type}", StatusCode.ERROR, None),
        (f"send {stream}", StatusCode.UNSET, written[1]),
    ]


# Before redis-py 6.1 (asyncio: 6.2) a cluster pipeline kept its commands, each with its reply,
# in itself: a process with such a redis-py queues three XADDs, the second to a string key.
_OLD_CLUSTER_PIPELINES = """
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from tracekit.instrumentation.redis import RedisInstrumentor

port, stream, wrong_type, async_stream, async_wrong_type = sys.argv[1:]
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
RedisInstrumentor().instrument()

def queue_three(pipeline, stream, wrong_type):
    for key, order in ((stream, "1"), (wrong_type, "2"), (stream, "3")):
        pipeline.xadd(key, {"order": order})

client = RedisCluster(host="127.0.0.1", port=int(port))
client.set(wrong_type, "not a stream")
pipeline = client.pipeline()
queue_three(pipeline, stream, wrong_type)
try:
    pipeline.execute()
except redis.ResponseError:
    pass

async def run():
    client = AsyncRedisCluster(host="127.0.0.1", port=int(port))
    await client.set(async_wrong_type, "not a stream")
    pipeline = client.pipeline()
    queue_three(pipeline, async_stream, async_wrong_type)
    try:
        await pipeline.execute()
    except redis.ResponseError:
        pass
    await client.aclose()

asyncio.run(run())
producers = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time)
print(json.dumps([
    [s.name, s.status.status_code.name, s.attributes.get("messaging.message.id")]
    for s in producers
]))
"""


@pytest.fixture(scope="module")
def redis_py_6_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """redis-py 6.0 in a folder of its own, to put before the installed one."""
    where = tmp_path_factory.mktemp("redis-py-6.0")
    pip_install(Path(sys.executable).parent, "--no-deps", "--target", str(where), "redis==6.0.0")
    return where


def test_a_refused_xadd_fails_only_its_own_span_before_redis_py_6_2(
    cluster_port: int, redis_py_6_0: Path
) -> None:
    """redis-py 6.0's cluster pipelines, sync and asyncio: the two entries written were
    recorded as failed with the second's error (tracekit read only 6.2's layout)."""
    tag, async_tag = ("{" + uuid.uuid4().hex[:8] + "}" for _ in range(2))
    keys = [f"piped-{tag}", f"string-{tag}", f"piped-{async_tag}", f"string-{async_tag}"]
    ran = subprocess.run(
        [sys.executable, "-c", _OLD_CLUSTER_PIPELINES, str(cluster_port), *keys],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(redis_py_6_0)},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    written, async_written = entry_ids(client, keys[0]), entry_ids(client, keys[2])
    client.delete(*keys)
    client.close()
    assert json.loads(ran.stdout) == [
        [f"send {keys[0]}", "UNSET", written[0]],
        [f"send {keys[1]}", "ERROR", None],
        [f"send {keys[0]}", "UNSET", written[1]],
        [f"send {keys[2]}", "UNSET", async_written[0]],
        [f"send {keys[3]}", "ERROR", None],
        [f"send {keys[2]}", "UNSET", async_written[1]],
    ]
