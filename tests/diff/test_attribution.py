"""Property: the per-node changes in critical-path time add up to the change in duration.

Random requests (HTTP calls, queue hops, internal spans, sometimes a batch consumer in a new trace
linked to several messages) are built twice with independent random times, sometimes with a node
more or less, through real SDK providers into a real store, read back and compared. The parts of
the attribution must add up to B's duration minus A's to the nanosecond, with nothing left over:
every joined trace is linked, so no time falls between traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import Span
from sdk_requests import Deployment, Request

from tracekit.diff import compare_paths
from tracekit.diff.attribution import GAP
from tracekit.path import Path, reconstruct

SERVICES = ("edge", "orders", "stock", "billing")
KINDS = ("call", "message", "internal")


@dataclass(frozen=True)
class Step:
    """One node of a random request: under which earlier step, what, in which service."""

    parent: int  # -1: under the entry span
    kind: str
    service: str


@dataclass(frozen=True)
class Timing:
    """Offsets drawn per side: where in (or after) its parent a step starts, and how long."""

    at: float  # share of the parent's duration (calls, internal) or delay after it (messages)
    duration: float


@st.composite
def shapes(draw: st.DrawFn) -> list[Step]:
    steps: list[Step] = []
    for _ in range(draw(st.integers(0, 9))):
        parent = draw(st.integers(-1, len(steps) - 1))
        steps.append(Step(parent, draw(st.sampled_from(KINDS)), draw(st.sampled_from(SERVICES))))
    return steps


def timings(count: int) -> st.SearchStrategy[list[Timing]]:
    one = st.builds(Timing, st.floats(0, 1.2), st.floats(0, 80))
    return st.lists(one, min_size=count, max_size=count)


@st.composite
def request_pairs(draw: st.DrawFn) -> tuple[list[Step], list[Step], list[Timing], list[Timing]]:
    a = draw(shapes())
    b = list(a)
    if b and draw(st.booleans()):  # B lost its last step, or gained one
        b = b[:-1] if draw(st.booleans()) else [*b, Step(draw(st.integers(-1, len(b) - 1)),
                                                          "call", "extra")]  # fmt: skip
    return a, b, draw(timings(len(a))), draw(timings(len(b)))


def emit(req: Request, steps: list[Step], times: list[Timing], batch: bool) -> None:
    """Build the request: each step's span(s) placed by its timing inside (or after) its parent."""
    entry = req.entry("edge", "/start", 0, 100)
    window: list[tuple[Span, float, float]] = []  # per step: the span children hang under
    producers: list[Span] = []
    for step, timing in zip(steps, times, strict=True):
        parent, start, end = window[step.parent] if step.parent >= 0 else (entry, 0.0, 100.0)
        if step.kind == "message":
            sent = req.publish(parent, f"q.{step.service}", start + 1, start + 2)
            producers.append(sent)
            begin = start + 2 + timing.at * 50
            span = req.consume(step.service, sent, begin, begin + timing.duration)
            window.append((span, begin, begin + timing.duration))
            continue
        begin = start + timing.at * (end - start)
        if step.kind == "call":
            _, span = req.call(parent, step.service, f"/{step.service}", begin,
                               begin + timing.duration + 2)  # fmt: skip
        else:
            span = req.internal(parent, f"work {step.service}", begin, begin + timing.duration)
        window.append((span, begin, begin + timing.duration))
    if batch and len(producers) >= 2:
        last = max((p.end_time or 0) - req.origin_ns for p in producers) / 1e6
        req.consume_batch("gather", producers, last + 3, last + 9)


def stored(deployment: Deployment, steps: list[Step], times: list[Timing], batch: bool) -> Path:
    req = deployment.request()
    emit(req, steps, times, batch)
    deployment.flush()
    path = reconstruct(deployment.store, req.correlation_id)
    assert path is not None
    return path


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request_pairs(), st.booleans())
def test_attribution_adds_up_to_the_duration_change(
    deployment: Deployment,
    pair: tuple[list[Step], list[Step], list[Timing], list[Timing]],
    batch: bool,
) -> None:
    steps_a, steps_b, times_a, times_b = pair
    a = stored(deployment, steps_a, times_a, batch)
    b = stored(deployment, steps_b, times_b, batch)

    result = compare_paths(a, b)

    assert sum(part.delta_ns for part in result.attribution) == result.duration_delta_ns
    assert not [part for part in result.attribution if part.component == GAP]
    for side, measured in ((a, "a"), (b, "b")):  # each side's nodes cover its whole duration
        total = sum(getattr(d, measured).critical_ns for d in result.nodes if getattr(d, measured))
        assert total == getattr(result, measured).duration_ns, side
    if result.duration_delta_ns:
        shares = sum(part.share or 0.0 for part in result.attribution)
        assert shares == pytest.approx(1.0)
