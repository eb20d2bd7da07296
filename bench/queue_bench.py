"""Per-message CPU cost of queue hops, on every broker tracekit instruments, against the bare client
and OpenTelemetry's instrumentation of it, in the same run against the same broker.

Brokers: pika and aio-pika against the real RabbitMQ at ``TRACEKIT_TEST_AMQP_URL`` (default
amqp://guest:guest@127.0.0.1:5672/), Redis streams against a private redis-server, Celery with
that RabbitMQ as its broker, confluent-kafka against librdkafka's mock cluster. Stacks and
measurement: ``bench/_queue_stacks.py``; each broker's round: ``bench/_queue_<broker>.py``.
Rounds run every stack in an order that rotates each round; the tables show the median round,
and the overheads subtract the bare client. A breakdown of tracekit's CPU per part (headers,
span, metrics) is measured in process (``bench/_queue_parts.py``), and with valgrind installed a
full run also counts pika's instructions per message under callgrind
(``bench/_queue_instructions.py``), a view the machine's other load does not move.

    python -m bench.queue_bench                # all brokers; rewrites docs/benchmarks.md's section
    python -m bench.queue_bench --quick        # a smoke run; prints only
    python -m bench.queue_bench --broker pika  # some brokers (repeatable); prints only
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from bench import _queue_instructions, _queue_parts
from bench._queue_docs import (
    HEADER,
    PARTS_HEADER,
    instructions_table,
    parts_rows,
    rows,
    section,
    verdicts,
)
from bench._queue_stacks import (
    Broker,
    Providers,
    Result,
    measure,
    providers,
)
from bench._report import machine, replace_section, text_table

SECTION = "Queue hops"
BROKERS = ("pika", "aio-pika", "redis", "celery", "kafka")
MESSAGES = {"pika": 3000, "aio-pika": 3000, "redis": 3000, "celery": 4000, "kafka": 3000}


@contextmanager
def opened(name: str, stack: ExitStack) -> Iterator[Broker]:
    """The broker ``name``; raises RuntimeError with a reason when it cannot be reached."""
    from bench import _queue_pika

    if name in ("pika", "aio-pika", "celery"):
        problem = _queue_pika.reachable()
        if problem is not None:
            raise RuntimeError(problem)
    if name == "pika":
        yield _queue_pika.Pika()
    elif name == "aio-pika":
        yield _queue_pika.AioPika()
    elif name == "redis":
        from bench import _queue_redis

        yield _queue_redis.RedisStreams(stack.enter_context(_queue_redis.running_redis()))
    elif name == "celery":
        from bench import _queue_celery

        yield _queue_celery.Celery()
    else:
        from bench import _queue_kafka

        yield _queue_kafka.ConfluentKafka()


def run(names: Sequence[str], rounds: int, scale: float, shared: Providers) -> list[Result]:
    results = []
    for name in names:
        with ExitStack() as stack, opened(name, stack) as broker:
            messages = max(20, int(MESSAGES[name] * scale))
            print(f"{broker.name}: {rounds} rounds of {messages} messages", flush=True)
            result = measure(broker, shared, rounds, messages)
            print(text_table(HEADER, rows(result)), flush=True)
            print("\n".join(verdicts(result)) + "\n", flush=True)
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    writing = not args.quick and not args.broker
    shared = providers()
    load_before = os.getloadavg()
    try:
        results = run(args.broker or list(BROKERS), args.rounds, args.scale, shared)
    except RuntimeError as error:
        print(f"queue_bench: {error}", file=sys.stderr)
        return 2
    measured = _queue_parts.parts(shared, 2_000 if args.quick else 20_000, 1 if args.quick else 5)
    print(text_table(PARTS_HEADER, parts_rows(measured)))
    load = (load_before, os.getloadavg())
    counts = None
    if (writing or args.instructions) and _queue_instructions.available():
        counts = _queue_instructions.per_message()
        print(instructions_table(counts))
    if writing:
        replace_section(SECTION, section(results, measured, args.rounds, load, machine(), counts))
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run; prints only")
    parser.add_argument("--broker", action="append", choices=BROKERS, help="repeatable")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--scale", type=float, default=None, help="times the default messages")
    parser.add_argument(
        "--instructions", action="store_true", help="also count pika's under callgrind"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.scale = args.scale or (0.1 if args.quick else 1.0)
    return args


if __name__ == "__main__":
    sys.exit(main())
