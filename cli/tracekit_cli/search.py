"""``tracekit search``: recent requests, newest first, with filters."""

from __future__ import annotations

import dataclasses

import click

from tracekit.diff.names import root_name
from tracekit.records import BackendError, RequestSummary
from tracekit_cli.options import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    NARROWEST_READ_VIEW,
    Number,
    backend_options,
    fail,
    format_option,
    open_source,
    parse_since,
    resolve_format,
    service_name,
)
from tracekit_cli.output import Command, emit_json, emit_rich, emit_text, examples


@click.command(
    cls=Command,
    short_help="List recent requests, the newest first.",
    epilog=examples(
        "tracekit search --since 15m",
        "tracekit search --service shop --errors",
        "tracekit search --min-duration 500 --format json",
    ),
)
@backend_options
@format_option
@click.option("--service", metavar="NAME", callback=service_name,
              help="Only requests whose root is in this service.")  # fmt: skip
@click.option("--since", metavar="WHEN",
              help="Only those started since then: 15m, 2h, 7d or an ISO 8601 time.")  # fmt: skip
@click.option("--min-duration", type=Number(min=0), metavar="MS",
              help="Only requests that took at least this many milliseconds.")  # fmt: skip
@click.option("--errors", is_flag=True, help="Only requests with an error anywhere in them.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="List at most this many requests (those that started last).")  # fmt: skip
def search(
    store: str | None, tempo: str | None, jaeger: str | None, timeout: float,
    output_format: str | None, service: str | None, since: str | None,
    min_duration: float | None, errors: bool, limit: int,
) -> None:  # fmt: skip
    """List recent requests: correlation ID, root service and route, start, duration, spans."""
    since_ns = parse_since(since)
    source = open_source(store, tempo, jaeger, timeout=timeout, service=service)
    try:
        found = list(source.recent_requests(
            service=service, since_unix_nano=since_ns, min_duration_ms=min_duration,
            errors_only=errors, limit=limit,
        ))  # fmt: skip
    except BackendError as error:
        fail(str(error), EXIT_ERROR)
    chosen = resolve_format(output_format)
    if not found:
        if chosen == "json":  # a script reading the output gets a document either way
            emit_json({"requests": []})
        filtered = service or since or min_duration is not None or errors
        fail("no requests match" if filtered else _nothing_yet(source), EXIT_NOT_FOUND)
    _emit([_named(r) for r in found], chosen)


def _named(r: RequestSummary) -> RequestSummary:
    """``r`` with its root named as ``diff`` names it where its span is named only by its
    method (``GET``, an SDK's span without a route): ``GET /reserve/{id}``."""
    return dataclasses.replace(r, root_name=root_name(r.root_name, r.root_attributes))


def _emit(found: list[RequestSummary], chosen: str) -> None:
    if chosen == "json":
        emit_json({"requests": [_summary_json(r) for r in found]})
    elif chosen == "text":
        from tracekit_cli.render.text import render_requests

        emit_text(lambda width: render_requests(found, width), NARROWEST_READ_VIEW)
    else:
        from tracekit_cli.render import rich_view

        emit_rich(lambda console: rich_view.render_requests(console, found), NARROWEST_READ_VIEW)


def _summary_json(r: RequestSummary) -> dict[str, object]:
    return {
        "correlation_id": r.correlation_id, "trace_id": r.trace_id,
        "root_service": r.root_service, "root_name": r.root_name,
        "start_unix_nano": r.start_unix_nano, "duration_ms": round(r.duration_ms, 3),
        "span_count": r.span_count, "error": r.error, "root_task": r.root_task,
    }  # fmt: skip


def _nothing_yet(source: object) -> str:
    """Nothing at all, no filter given: an empty store is named, which is the one read (a
    collector that has received nothing yet, a service writing to another file)."""
    from tracekit.store import Store

    if isinstance(source, Store):
        return f"no requests in the store {source.path} yet"
    return "no requests match"
