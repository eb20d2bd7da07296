"""The OTLP/gRPC port answers the standard health check (``grpc.health.v1.Health/Check``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conditions import wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

TRACES = "opentelemetry.proto.collector.trace.v1.TraceService"
Status = health_pb2.HealthCheckResponse.ServingStatus


def _check(receiver: Receiver, service: str = "") -> str:
    """What a Kubernetes gRPC probe (or grpc_health_probe) is told: a status, or an error code."""
    address = receiver.grpc_address
    assert address is not None
    with grpc.insecure_channel(f"127.0.0.1:{address[1]}") as channel:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(Status.Name(answer.status))


@pytest.fixture
def receiver(store_path: Path) -> Iterator[Receiver]:
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0, grpc_port=0))
    yield receiver
    receiver.stop()


def test_the_health_check_says_serving_once_the_writer_can_commit(
    receiver: Receiver, writer_held: threading.Event
) -> None:
    """A Kubernetes ``grpc`` probe, or grpc_health_probe, was told UNIMPLEMENTED: read as a
    failed probe, a collector probed on its gRPC port never became ready. It is told
    NOT_SERVING while the writer process starts, as ``/health`` says ``starting``, then
    SERVING, for the server as a whole and for each OTLP service; NOT_FOUND for another."""
    receiver.start()
    assert _check(receiver) == "NOT_SERVING"
    assert _check(receiver, TRACES) == "NOT_SERVING"
    writer_held.set()
    assert receiver.wait_ready(30)
    assert _check(receiver) == "SERVING"
    assert _check(receiver, TRACES) == "SERVING"
    assert _check(receiver, "opentelemetry.proto.collector.logs.v1.LogsService") == "SERVING"
    assert _check(receiver, "grpc.health.v1.Health.Other") == "NOT_FOUND"
    assert _raw_check(receiver, b"\x0a\x05ab") == "INVALID_ARGUMENT"  # a string cut short


def _raw_check(receiver: Receiver, request: bytes) -> str:
    """The error code a Check whose message is ``request`` gets."""
    address = receiver.grpc_address
    assert address is not None
    with grpc.insecure_channel(f"127.0.0.1:{address[1]}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.RpcError) as error:
            check(request, timeout=10)
    return str(error.value.code().name)


def test_the_health_check_is_not_serving_once_a_stop_began(receiver: Receiver) -> None:
    """From the stop's first moment the probe takes the collector out of service, as
    ``/health`` says ``stopping``: NOT_SERVING until gRPC refuses new calls."""
    receiver.start()
    assert receiver.wait_ready(30)
    assert _check(receiver) == "SERVING"
    receiver.service.stopping = True  # the stop's first step, before the ports stop accepting
    assert _check(receiver) == "NOT_SERVING"
    stopping = threading.Thread(target=receiver.stop)
    stopping.start()
    wait_for(lambda: _check(receiver) != "NOT_SERVING", what="gRPC closed")
    assert _check(receiver) == "UNAVAILABLE"
    stopping.join(30)
