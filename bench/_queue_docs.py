"""The "Queue hops" section of docs/benchmarks.md, written from one run of ``bench.queue_bench``."""

from __future__ import annotations

from bench._queue_stacks import BARE, CORRELATION, FULL, PEER, STACKS, Result
from bench._report import markdown_table

HEADER = [
    "stack", "publish µs/msg", "overhead", "/ OTel", "consume µs/msg", "overhead", "/ OTel",
]  # fmt: skip
PARTS_HEADER = [
    "side", "headers", "span", "metrics", "the rest", "full: whole", "correlation-only: headers",
    "correlation-only: whole", "OTel pika: whole", "span / OTel pika",
]  # fmt: skip
INTRO = """\
`python -m bench.queue_bench`: CPU time per message (`process_time`: every thread of the process,
so span export counts) of publishing and of consuming with a handler that does nothing, for each
client tracekit instruments, in one run against the same broker: the bare client, tracekit (spans
and its Prometheus metrics), tracekit in correlation-only mode, and OpenTelemetry's instrumentation
of the same client (its own tracer provider, its default W3C propagators). Every round runs the four
stacks in an order that rotates each round; the tables show the median of {rounds} rounds, the
overhead subtracts the bare client, and "/ OTel" divides tracekit's overhead by OpenTelemetry's.
Spans go through a batch processor to an exporter that drops them.

Machine: {machine}, shared with other engineers' test suites (1-minute load
average {load}). CPU time is far steadier than wall time there, but a busy neighbour still
costs a few µs per message through the caches: compare rows of one table, not tables of two runs;
the instruction counts at the end are the view the neighbours do not move.

Reading the ratios. Where OpenTelemetry makes one span per hop side, that span is most of its
overhead, and tracekit's full mode makes the same SDK span (created with its attributes, ended
through the provider's processors): "span" in the parts table below. On top of it tracekit
carries three headers more than OpenTelemetry's default propagators write (the correlation ID,
`baggage` with the correlation member, the publish time), which the client encodes and decodes,
records three metric observations with exemplars, and makes the correlation ID current for the
handler. So where OpenTelemetry's side of a hop is one span, full mode costs about as much or up
to a half more (Celery, aio-pika, Kafka); more on pika's consume, where OpenTelemetry's span is
the cheapest of all; and less only where OpenTelemetry does more (pika's publish, two spans).
0.6 would need tracekit's whole hop to cost less than the SDK span inside it, and that span
alone costs more than 0.6 of OpenTelemetry pika's whole consume callback (the parts table's last
column, in process). Correlation-only mode makes
no span: what is left is reading and writing the headers and the context (about 4 µs a side in
process, parts table), plus what the client spends on three more headers; in a client's loop
the same instructions take three to five times their in-process time, so it lands at 0.13-0.62
of OpenTelemetry's overhead, below 0.15 only on Kafka's consume. Between two runs on this
machine the same stack's overhead moves by up to a third; the instruction counts at the end are
the measure to compare trees by.
"""


TARGETS = {FULL: 0.6, CORRELATION: 0.15}  # tracekit's overhead / OpenTelemetry's, at most
NOTES = {
    "pika": "OpenTelemetry's pika instrumentation wraps both the `BlockingChannel` and the channel "
    "beneath it, so every `basic_publish` makes two PRODUCER spans and injects twice: its publish "
    "costs two spans, its consume one.",
    "aio-pika": "Both make one span per publish and one per delivery, around the callback.",
    "Redis streams (redis-py)": "OpenTelemetry's redis instrumentation traces commands, not "
    "hops: a CLIENT span per `XADD` and one per `XREAD` (a batch of 500 here), no context in "
    "the entries, no span around the handler, hence no target. tracekit's consume rows include "
    "`consume_entry` around each handler, the span a user opens.",
    "Celery (RabbitMQ broker)": "A task costs Celery about 0.2 ms each way, so these rows move "
    "most from round to round. Both make one PRODUCER span per `delay()` and one CONSUMER span "
    "per task run.",
    "confluent-kafka (mock cluster)": "librdkafka's mock cluster runs in the benchmark's process, "
    "so its CPU (and what larger messages cost it) is in every row. OpenTelemetry's consumer "
    "makes two spans per `poll` (`recv` and the message's).",
}


def verdicts(result: Result) -> list[str]:
    """One line per target: the ratio measured and whether it is met."""
    if not result.hop_peer:
        return [f"{result.broker}: no target ({result.peer} traces commands, not hops)"]
    return [
        f"{result.broker} {what}, {stack}: {_verdict(result, stack, phase, target)}"
        for stack, target in TARGETS.items()
        for phase, what in enumerate(("publish", "consume"))
    ]


def _verdict(result: Result, stack: str, phase: int, target: float) -> str:
    ratio = result.ratio(stack, phase)
    verdict = f"{ratio:.2f} (target <= {target}, {'met' if ratio <= target else 'NOT met'})"
    noise = result.noise(phase)
    if result.overhead(stack, phase) < noise:
        verdict += (
            f"; the overhead is within the bare client's round-to-round spread "
            f"(±{noise * 1e6:.1f} µs): not resolved by this run"
        )
    return verdict


def section(
    results: list[Result],
    parts: dict[str, dict[str, float]],
    rounds: int,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    machine: str,
    instructions: dict[str, tuple[float, float]] | None = None,
) -> str:
    """The whole section body."""
    start, end = load
    load_text = f"{start[0]:.1f} at the start, {end[0]:.1f} at the end"
    text = [INTRO.format(rounds=rounds, machine=machine, load=load_text)]
    text.extend(_broker(result) for result in results)
    text.append(_parts(parts))
    if instructions is not None:
        text.append(instructions_table(instructions))
    return "\n".join(text)


def _broker(result: Result) -> str:
    rounds_load = f"load average {result.load[0]:.1f} to {result.load[1]:.1f}"
    summary = f"{len(result.rounds[BARE])} rounds of {result.messages} messages, {rounds_load}."
    lines = "\n".join(f"- {line}" for line in verdicts(result))
    return (
        f"### {result.broker}\n\n{markdown_table(HEADER, rows(result))}\n\n{summary} "
        f"{NOTES.get(result.broker, '')}\n\n{lines}\n"
    )


def instructions_table(counts: dict[str, tuple[float, float]], client: str = "pika") -> str:
    """The instruction counts of one client's stacks (``_queue_instructions.per_message``), as
    a Markdown subsection."""
    bare = counts[BARE]
    peer = counts[PEER]
    header = ["stack", "publish", "overhead", "/ OTel", "consume", "overhead", "/ OTel"]
    body = []
    for stack in STACKS:
        cells = [{BARE: "bare client", PEER: f"OpenTelemetry {client}"}.get(stack, stack)]
        for phase in (0, 1):
            overhead = counts[stack][phase] - bare[phase]
            ratio = overhead / (peer[phase] - bare[phase])
            shown = "" if stack in (BARE, PEER) else f"{ratio:.2f}"
            cells += [f"{counts[stack][phase] / 1e3:.0f}k", f"{overhead / 1e3:+.0f}k", shown]
        body.append(cells)
    return (
        f"### {client} in instructions\n\n"
        "Instructions per message (user space) counted by valgrind's callgrind, which the "
        "neighbours do not move (`bench/_queue_instructions.py`: each stack in a child process, "
        "400 and 1,200 messages, the difference divided by 800):\n\n"
        + markdown_table(header, body)
        + "\n"
    )


def rows(result: Result) -> list[list[str]]:
    """One row per stack: median µs per message, overhead over the bare client, ratio."""

    def cells(stack: str, phase: int) -> list[str]:
        shown = result.hop_peer and stack not in (BARE, PEER)
        ratio = f"{result.ratio(stack, phase):.2f}" if shown else ""
        overhead = result.overhead(stack, phase) * 1e6
        return [f"{result.median(stack, phase) * 1e6:.1f}", f"{overhead:+.1f}", ratio]

    label = {BARE: "bare client", PEER: result.peer, FULL: "tracekit", CORRELATION: CORRELATION}
    return [[label[stack], *cells(stack, 0), *cells(stack, 1)] for stack in STACKS]


def parts_rows(measured: dict[str, dict[str, float]]) -> list[list[str]]:
    """Per side: CPU µs of each part in full mode, the rest, and correlation-only's."""
    full, only, peer = measured["full"], measured["correlation"], measured["opentelemetry"]
    out = []
    for side in ("publish", "consume"):
        known = sum(full[f"{side} {part}"] for part in ("headers", "span", "metrics"))
        out.append(
            [side, f"{full[f'{side} headers']:.1f}", f"{full[f'{side} span']:.1f}",
             f"{full[f'{side} metrics']:.1f}", f"{full[side] - known:.1f}", f"{full[side]:.1f}",
             f"{only[f'{side} headers']:.1f}", f"{only[side]:.1f}", f"{peer[side]:.1f}",
             f"{full[f'{side} span'] / peer[side]:.2f}"]
        )  # fmt: skip
    return out


def _parts(measured: dict[str, dict[str, float]]) -> str:
    return (
        "### Where tracekit's time goes\n\n"
        "CPU µs per message of each part of `messaging.publish` and `messaging.consume`, each run "
        "on its own in a loop in process, no broker (`bench/_queue_parts.py`; median of 5 loops "
        "of 20,000). Headers: written (trace context, baggage, correlation ID, publish time) or "
        "read (bounded and checked, trace context and baggage extracted, queue wait). Span: the "
        "SDK's start and end with tracekit's attributes through the global provider's processors, "
        "and on the consumer its context made current and restored. Metrics: one histogram "
        "observation with its exemplar per publish, queue wait and process duration per message "
        "consumed (the sent, consumed and failed counters are read from them when scraped). The "
        "rest: the whole minus those parts (the correlation ID made current and restored, the "
        "clocks, the calls in between). OTel pika: OpenTelemetry's pika publish wrapper (a "
        "publish goes through two) and consume callback, around calls that do nothing, with "
        "its own provider and propagators; the last column is the floor of tracekit's full "
        "mode against it, the SDK span alone.\n\n"
        + markdown_table(PARTS_HEADER, parts_rows(measured))
        + "\n"
    )
