"""Over Jaeger, which cannot search by span link, a path that ends at a publish says why.

A pull consumer that began a trace of its own and carries no correlation ID is found on the
store and on Tempo 2.6+ by its link to the publish (``{ link:traceID = ... }``); Jaeger has no
such search, so `trace` over Jaeger showed req-incident-9 ending at "api: publish jobs", 90 ms
and 2 services where the store shows 215 ms and the worker and ledger (the root cause, "duplicate
entry for job 77"), and said nothing; a Tempo before 2.6 says it in the path's warnings. A real
server on loopback answers as Jaeger does (``jaeger_fake``).
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import Topology, checkout, incident

from tracekit_cli.main import cli


def warnings_of(url: str, query: str) -> list[str]:
    result = CliRunner().invoke(cli, ["trace", query, "--jaeger", url, "--format", "json"],
                                env={"COLUMNS": "100"})  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    warnings: list[str] = json.loads(result.stdout)["warnings"]
    return warnings


def test_a_publish_whose_consumer_jaeger_cannot_find_is_a_warning_of_the_path(serve: Any) -> None:
    url = serve(FakeJaeger(recent(incident().spans))).url

    assert warnings_of(url, "req-incident-9") == [
        f"Jaeger at {url} cannot search span links: a message published in this request has no "
        "consumer here, and a consumer that began a trace of its own without the correlation ID "
        "is not shown (tracekit trace <its trace id> shows it with this request)"
    ]


def test_a_publish_whose_consumer_is_shown_is_no_warning(serve: Any) -> None:
    """checkout's consumer is the publish's child; a pull consumer carrying the correlation ID is
    found by it and links to the publish."""
    pull = Topology("req-pull-2")
    root = pull.span("web", "POST /jobs", "SERVER", 0, 50)
    sent = pull.publish(root, "jobs", 10, 12, system="rabbitmq")
    pull.new_trace()
    pull.consume("worker", "jobs", 300, 400, links=[sent], system="rabbitmq")
    url = serve(FakeJaeger(recent(checkout().spans + pull.spans))).url

    assert warnings_of(url, "req-checkout-1") == []
    assert warnings_of(url, "req-pull-2") == []


def test_a_consumers_receive_or_settle_span_is_no_publish(serve: Any) -> None:
    """OpenTelemetry's messaging conventions make a pull "receive" and a "settle" (an ack, a
    nack: tracekit records a late rejection so) CLIENT spans of the messaging system, as a
    "send" is. Each was taken for a publish no span consumes, and checkout's path, whose every
    message is consumed, warned that a message published in this request has no consumer."""
    t = checkout()
    consumer = next(s for s in t.spans if s.kind == "CONSUMER")
    for operation, name in [("receive", "poll orders.created"), ("settle", "nack orders.created")]:
        t.span("payments", name, "CLIENT", 195, 195, consumer,
               attrs={"messaging.system": "kafka", "messaging.destination.name": "orders.created",
                      "messaging.operation.type": operation})  # fmt: skip
    legacy = Topology("req-legacy-3")  # the older attribute, messaging.operation
    root = legacy.span("web", "POST /jobs", "SERVER", 0, 50)
    sent = legacy.publish(root, "jobs", 10, 12, system="rabbitmq")
    job = legacy.consume("worker", "jobs", 30, 40, sent, system="rabbitmq")
    older = {"messaging.system": "rabbitmq", "messaging.operation": "receive"}
    legacy.span("worker", "jobs receive", "CLIENT", 25, 28, job, attrs=older)
    url = serve(FakeJaeger(recent(t.spans + legacy.spans))).url

    assert warnings_of(url, "req-checkout-1") == []
    assert warnings_of(url, "req-legacy-3") == []
