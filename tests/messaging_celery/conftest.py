"""Celery's brokers: a real redis-server on a free loopback port, and the shared RabbitMQ at
``TRACEKIT_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conditions import need
from redis_server import running_redis

from tracekit import instrumentation

AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throw-away redis-server (no persistence) for this module's tests."""
    with running_redis() as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of the reachable RabbitMQ."""
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception:
        need(False, f"RabbitMQ at {AMQP_URL}")
    return AMQP_URL


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> str:
    """Each broker in turn: the private Redis, then the shared RabbitMQ."""
    fixture = "redis_url" if request.param == "redis" else "amqp_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def leave_no_names() -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """``leave_no_names(broker, conf)``: after the test, delete the task queue and exchanges that
    Celery configuration ``conf`` declared on the shared RabbitMQ (a private Redis just stops)."""
    registered: list[tuple[str, dict[str, Any]]] = []
    yield lambda broker, conf: registered.append((broker, conf))
    for broker, conf in registered:
        if broker.startswith("amqp"):
            _delete_names(broker, conf)


def _delete_names(broker: str, conf: dict[str, Any]) -> None:
    """Only the names ``conf`` gives: Celery's defaults (``celeryev``, ``celery.pidbox``) are
    shared by every worker on the broker, and deleting them stops those that send events."""
    from kombu import Connection

    exchanges = [conf["task_default_queue"]]
    if "event_exchange" in conf:
        exchanges.append(conf["event_exchange"])
    if "control_exchange" in conf:
        control = conf["control_exchange"]
        exchanges += [f"{control}.pidbox", f"reply.{control}.pidbox"]
    with Connection(broker) as connection:
        channel = connection.channel()
        channel.queue_delete(conf["task_default_queue"])
        for exchange in exchanges:
            channel.exchange_delete(exchange)


@pytest.fixture
def instrumented() -> Iterator[None]:
    """tracekit's Celery and requests instrumentation, removed after the test."""
    instrumentation.instrument(["celery", "requests"])
    yield
    instrumentation.uninstrument()
