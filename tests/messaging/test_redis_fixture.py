"""The tests' redis-server helper uses only the server it started: a developer's own Redis on
the port it chose (started there between the choice and the start) is never written to."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis
import redis_server
from conditions import need, wait_for
from loopback import free_port


@pytest.fixture
def developers_redis() -> Iterator[int]:
    """A Redis of someone else's on loopback, holding their data; its port."""
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server")
    assert binary is not None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        wait_for(lambda: client.set("orders:42", "paid"), 10, "the developer's Redis")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_a_redis_on_the_chosen_port_is_left_alone(
    developers_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([developers_redis])  # the port is taken once chosen; the next choice is free
    monkeypatch.setattr(redis_server, "free_port", lambda: next(ports, None) or free_port())
    with redis_server.running_redis() as url:
        own = redis.Redis.from_url(url)
        own.set("tracekit:test", "1")
        own.delete("orders:42")
        assert own.get("tracekit:test") == b"1"
    developers = redis.Redis(port=developers_redis)
    assert developers.keys() == [b"orders:42"]
    assert developers.get("orders:42") == b"paid"
