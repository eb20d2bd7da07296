"""What a hostile baggage header costs a request through tracekit's middleware.

A request through tracekit's ASGI and WSGI middleware (in process, like middleware_bench) with a
normal header set, and the same request with a hostile ``baggage`` header: 10,000 valid members
(128 KiB), or 8 KiB of 4,096 invalid members. The difference is what the hostile header adds;
the target is at most 2 ms.

    python -m bench.baggage_bench            # full run; rewrites docs/benchmarks.md's section
    python -m bench.baggage_bench --quick    # a smoke run; prints only
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Callable
from time import perf_counter
from typing import Any

from bench import _middleware_apps as apps
from bench._report import machine, markdown_table, replace_section, text_table

SECTION = "Hostile baggage"
TARGET_MS = 2.0
HOSTILE = ",".join(f"k{i}=v{i}" for i in range(10_000))  # 128 KiB
INVALID = "x," * 4096  # 8 KiB of members without a value
NORMAL = "tenant=acme,correlation.id=" + apps.CORRELATION_ID

_BASE_HEADERS = [
    (b"host", b"orders.internal:8000"),
    (b"traceparent", apps.TRACEPARENT.encode()),
    (b"x-correlation-id", apps.CORRELATION_ID.encode()),
]


def _scope(baggage: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": apps.PATH, "raw_path": apps.PATH.encode(), "root_path": "",
        "query_string": b"", "headers": [*_BASE_HEADERS, (b"baggage", baggage.encode())],
        "server": ("orders.internal", 8000), "client": ("10.0.0.7", 51234),
    }  # fmt: skip


def _environ(baggage: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": apps.PATH, "QUERY_STRING": "",
        "SERVER_NAME": "orders.internal", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "orders.internal:8000", "HTTP_TRACEPARENT": apps.TRACEPARENT,
        "HTTP_X_CORRELATION_ID": apps.CORRELATION_ID, "HTTP_BAGGAGE": baggage,
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }  # fmt: skip


def asgi_request(baggage: str) -> Callable[[int], float]:
    """A loop of n requests through tracekit's ASGI middleware; seconds per request."""
    from prometheus_client import CollectorRegistry

    from tracekit.asgi import TracekitMiddleware

    provider, _ = apps.traced_provider()
    app = TracekitMiddleware(
        apps.starlette_app(), tracer_provider=provider, registry=CollectorRegistry()
    )
    scope = _scope(baggage)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def loop(n: int) -> float:
        started = perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return (perf_counter() - started) / n

    return lambda n: asyncio.run(loop(n))


def wsgi_request(baggage: str) -> Callable[[int], float]:
    """A loop of n requests through tracekit's WSGI middleware; seconds per request."""
    from prometheus_client import CollectorRegistry

    from tracekit.wsgi import TracekitMiddleware

    provider, _ = apps.traced_provider()
    app = TracekitMiddleware(
        apps.flask_app().wsgi_app, tracer_provider=provider, registry=CollectorRegistry()
    )
    environ = _environ(baggage)

    def start_response(*_: Any) -> Any:
        return lambda data: None

    def loop(n: int) -> float:
        started = perf_counter()
        for _ in range(n):
            body = app(dict(environ), start_response)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (perf_counter() - started) / n

    return loop


def median_ms(run: Callable[[int], float], rounds: int, n: int) -> float:
    run(max(1, n // 10))  # warm up
    return statistics.median(run(n) for _ in range(rounds)) * 1e3


def measure(rounds: int, n: int) -> list[list[str]]:
    """Rows: stack, normal ms, each hostile header's ms, the larger added ms."""
    rows = []
    for label, build in (("tracekit ASGI", asgi_request), ("tracekit WSGI", wsgi_request)):
        normal, many, invalid = (median_ms(build(h), rounds, n) for h in (NORMAL, HOSTILE, INVALID))
        added = max(many, invalid) - normal
        rows.append([label, *(f"{ms:.3f}" for ms in (normal, many, invalid, added))])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and (full run) rewrite the docs section; 1 if the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run; prints only")
    quick = parser.parse_args(argv).quick
    rounds, n = (3, 50) if quick else (15, 400)
    rows = measure(rounds, n)
    header = ["request", "normal (ms)", "10,000 members (ms)", "4,096 invalid (ms)", "added (ms)"]
    print(text_table(header, rows))
    worst = max(float(row[-1]) for row in rows)
    print(f"worst added cost {worst:.3f} ms (target at most {TARGET_MS} ms)")
    if not quick:
        replace_section(
            SECTION,
            f"{__doc__.split(chr(10) + chr(10))[1]}\n\n{markdown_table(header, rows)}\n\n"
            f"Median of {rounds} rounds of {n} requests; {machine()}.",
        )
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
