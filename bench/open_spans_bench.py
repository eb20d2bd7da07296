"""What keeping every open span costs a span, against what tracekit's middleware costs a request.

tracekit keeps each span the tracer provider starts, weakly (``OpenSpanProcessor``), so
that SIGTERM's handler can record, failed, the application's own spans and contrib
instrumentations' still open. One application span (``start_as_current_span``, through the SDK's
``BatchSpanProcessor`` to an exporter that discards it) with and without that processor, and, in
the same rounds, a request through the bare Starlette app and through tracekit's full ASGI
middleware (as in middleware_bench). The target: a span's tracking costs at most 2% of what the
middleware adds to a request. Times are the process's CPU time; rounds interleave the stacks.

    python -m bench.open_spans_bench            # full run; rewrites docs/benchmarks.md's section
    python -m bench.open_spans_bench --quick    # a smoke run; prints only
"""

from __future__ import annotations

import argparse
import gc
import statistics
from collections.abc import Callable
from time import process_time

from opentelemetry.sdk.trace import TracerProvider

from bench import _middleware_apps as apps
from bench import middleware_bench
from bench._report import machine, markdown_table, replace_section, text_table
from tracekit._runtime.unfinished import OpenSpanProcessor

SECTION = "Keeping open spans"
TARGET = 0.02


def span_loop(provider: TracerProvider) -> Callable[[int], float]:
    """n application spans in a loop; CPU microseconds per span."""
    tracer = provider.get_tracer("bench.open_spans")

    def run(n: int) -> float:
        started = process_time()
        for _ in range(n):
            with tracer.start_as_current_span("charge card"):
                pass
        return (process_time() - started) / n * 1e6

    return run


def measure(rounds: int, n: int) -> dict[str, list[float]]:
    """Per-unit microseconds of each stack, one sample per round."""
    plain, _ = apps.traced_provider()
    kept, _ = apps.traced_provider()
    kept.add_span_processor(OpenSpanProcessor())
    suite = middleware_bench.asgi_suite()
    by_name = {stack.name: stack for stack in suite.stacks}
    bare, full = by_name["bare Starlette"].app, by_name["tracekit full"].app
    loops: dict[str, Callable[[int], float]] = {
        "span": span_loop(plain),
        "span, kept while open": span_loop(kept),
        "request, bare": lambda k: suite.run(bare, k) / k * 1e6,
        "request, tracekit full": lambda k: suite.run(full, k) / k * 1e6,
    }
    for loop in loops.values():
        loop(max(n // 10, 50))  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            samples[name].append(loops[name](n))
    return samples


def _added(samples: dict[str, list[float]], over: str, stack: str) -> float:
    pairs = zip(samples[stack], samples[over], strict=True)
    return statistics.median(s - b for s, b in pairs)


def rows(samples: dict[str, list[float]]) -> tuple[list[list[str]], bool]:
    """The table's rows, and whether the target is met."""
    kept = _added(samples, "span", "span, kept while open")
    middleware = _added(samples, "request, bare", "request, tracekit full")
    ratio = kept / middleware
    table = [
        [name, f"{statistics.median(values):.2f}", f"{min(values):.2f}"]
        for name, values in samples.items()
    ]
    table.append(["added: keeping a span while open", f"{kept:.2f}", "—"])
    table.append(["added: tracekit's ASGI middleware, a request", f"{middleware:.2f}", "—"])
    met = ratio <= TARGET
    verdict = "met" if met else "MISSED"
    table.append(["ratio (target ≤ 0.02)", f"{ratio:.3f}", verdict])
    return table, met


HEADER = ["µs per span or request (CPU)", "median", "min"]


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, and (unless ``--quick`` or ``--no-docs``) update the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=3000, help="spans or requests per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 300; no docs")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    rounds, n = (3, 300) if args.quick else (args.rounds, args.n)
    table, met = rows(measure(rounds, n))
    print(text_table(HEADER, table))
    if not (args.quick or args.no_docs):
        about = __doc__.split("\n\n    python")[0].split("\n", 1)[1].strip()
        run = f"{rounds} interleaved rounds of {n} per stack on {machine()}."
        replace_section(SECTION, f"{about}\n\n{run}\n\n{markdown_table(HEADER, table)}\n")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
