"""A local moto server on loopback stands in for Amazon SQS (real HTTP, real boto3 clients)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from moto_server import running_moto

from tracekit import instrumentation


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    """The URL of a moto server (ThreadedMotoServer, free loopback port) standing in for SQS."""
    with running_moto() as url:
        yield url


def _client(service: str, endpoint: str) -> Any:
    """A boto3 client of ``service`` pointed at the moto server."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def sqs_client(sqs_endpoint: str) -> Any:
    """A boto3 SQS client pointed at the moto server."""
    return _client("sqs", sqs_endpoint)


@pytest.fixture
def queue_url(sqs_client: Any) -> str:
    """A fresh queue."""
    return str(sqs_client.create_queue(QueueName=f"orders-{uuid.uuid4().hex[:8]}")["QueueUrl"])


@pytest.fixture
def instrumented() -> Iterator[None]:
    """tracekit's botocore and requests instrumentation, removed after the test."""
    instrumentation.instrument(["botocore", "requests"])
    yield
    instrumentation.uninstrument()


@pytest.fixture
def sns_client(sqs_endpoint: str) -> Any:
    """A boto3 SNS client pointed at the same moto server (SNS delivers to its SQS queues)."""
    return _client("sns", sqs_endpoint)
