"""Stream entries written through a Redis Cluster's pipelines (a real cluster of three
redis-server nodes on loopback, made by ``redis-cli --cluster create``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis_server import running_redis_cluster


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
