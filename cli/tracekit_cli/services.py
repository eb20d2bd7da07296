"""``tracekit services``: the service map (who calls whom, calls, latency, error rate)."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from tracekit.records import BackendError, HopSample, HopSampleSource, SpanSource
from tracekit_cli.options import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    NARROWEST_READ_VIEW,
    backend_options,
    fail,
    format_option,
    open_source,
    parse_since,
    require_jaeger_for_service,
    resolve_format,
    say,
    service_name,
    warn,
)
from tracekit_cli.output import Command, emit_json, emit_rich, emit_text, examples

MAX_SPANS = 200_000  # what the map holds in memory (about 1.5 kB a span)


@click.command(
    cls=Command,
    short_help="Show the service map: calls, errors, latency per edge.",
    epilog=examples(
        "tracekit services",
        "tracekit services --since 24h --format json",
    ),
)
@backend_options
@format_option
@click.option("--since", metavar="WHEN", default="1h", show_default=True,
              help="Window: 15m, 2h, 7d or an ISO 8601 time "
              f"(its newest {MAX_SPANS:,} spans).")  # fmt: skip
@click.option("--service", metavar="NAME", callback=service_name,
              help="Jaeger only: the service to start from.")  # fmt: skip
def services(
    store: str | None, tempo: str | None, jaeger: str | None, timeout: float,
    output_format: str | None, since: str, service: str | None,
) -> None:  # fmt: skip
    """Show the service map: edges with type, calls, error rate, p50 and p95 latency."""
    from tracekit.path import edges_from_samples

    since_ns = parse_since(since)
    if since_ns is None:  # (the epoch, 0, is a time like any other)
        since_ns = int((time.time() - 3600) * 1e9)
    require_jaeger_for_service(service, jaeger)
    source = open_source(store, tempo, jaeger, timeout=timeout, service=service)
    try:
        samples, requests = _window_samples(source, since_ns, since)
        edges = edges_from_samples(samples)
        chosen = resolve_format(output_format)
        # counted where shown: in JSON, and in the views of a map without edges (120 ms of
        # SQLite over a full 200,000-span window, a quarter of the map's own reading)
        seen = _busiest(requests()) if chosen == "json" or not edges else []
    except BackendError as error:
        fail(str(error), EXIT_ERROR)
    if chosen == "json":  # an empty map too: a script reading it gets a document either way
        emit_json({"since_unix_nano": since_ns, "edges": [e.to_json() for e in edges],
                   "services": [{"name": name, "requests": n} for name, n in seen]})  # fmt: skip
    if not edges:
        _emit_services(seen, chosen)
        _no_calls(since, found=bool(seen))
        return
    if chosen == "text":
        from tracekit_cli.render.text import render_edges

        emit_text(lambda width: render_edges(edges, width), NARROWEST_READ_VIEW)
    elif chosen == "rich":
        from tracekit_cli.render import rich_view

        emit_rich(lambda console: rich_view.render_edges(console, edges), NARROWEST_READ_VIEW)


def _emit_services(seen: list[tuple[str, int]], chosen: str) -> None:
    """A map without edges: the services seen and the requests each took in, so one service
    alone, or services that never called each other, are still named."""
    if not seen or chosen == "json":
        return
    if chosen == "text":
        from tracekit_cli.render.text import render_services

        emit_text(lambda width: render_services(seen, width), NARROWEST_READ_VIEW)
    else:
        from tracekit_cli.render import rich_view

        emit_rich(lambda console: rich_view.render_services(console, seen), NARROWEST_READ_VIEW)


def _no_calls(since: str, *, found: bool) -> None:
    """Say that the window holds no calls between services: exit 1 when it holds no service
    either (nothing found), else 0, as the services it lists were found (a web app alone, a
    worker and a cron job): a pipeline under ``set -e`` keeps going with what it read."""
    message = f"no calls between services since {since}"
    if not found:
        fail(message, EXIT_NOT_FOUND)
    say(f"tracekit: {message}")


def _busiest(requests: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(requests.items(), key=lambda item: (-item[1], item[0]))


def _window_samples(
    source: SpanSource, since_ns: int, since: str
) -> tuple[list[HopSample], Callable[[], dict[str, int]]]:
    """The window's calls, and how to count the requests each service took in; past
    ``MAX_SPANS`` spans, those among the newest and a warning that says so. (The store finds
    them itself; from another backend, in the spans it answers.)"""
    from tracekit.path import hop_samples, requests_by_service
    from tracekit.records import newest_spans

    if isinstance(source, HopSampleSource):
        samples, more = source.newest_hop_samples(since_ns, limit=MAX_SPANS)
        store = source

        def requests() -> dict[str, int]:
            return store.newest_requests_by_service(since_ns, limit=MAX_SPANS)
    else:
        spans = newest_spans(source, since_ns, MAX_SPANS + 1)
        more, spans = len(spans) > MAX_SPANS, spans[-MAX_SPANS:]
        samples = hop_samples(spans)

        def requests() -> dict[str, int]:
            return requests_by_service(spans)

    if more:
        warn(f"more than {MAX_SPANS} spans since {since}: the map covers only the newest "
             f"{MAX_SPANS} (narrow --since)")  # fmt: skip
    return samples, requests
