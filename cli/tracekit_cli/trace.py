"""``tracekit trace ID``: one request's path across services, traces and queue hops.

Start-up is kept light: click, the engine and the chosen backend only; rich's styles load for
``--format rich`` alone (never ``rich.console``: see ``render/rich_view.py``).
"""

from __future__ import annotations

import click

from tracekit.path.collect import MAX_SPANS
from tracekit.records import BackendError
from tracekit_cli.options import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    NARROWEST_READ_VIEW,
    backend_options,
    check_id,
    fail,
    format_option,
    no_color,
    open_source,
    require_jaeger_for_service,
    resolve_format,
    searched_back,
    service_name,
    traceparent_trace_id,
    where_to_look,
)
from tracekit_cli.output import Command, collecting_less_often, emit_json, emit_text, examples

# far more than memory holds (about 1.5 kB a span), and what the store's 64-bit LIMIT can take
MAX_SPANS_LIMIT = 10_000_000


@click.command(
    cls=Command,
    short_help="Show the path of one request, its hops, errors and logs.",
    epilog=examples(
        "tracekit trace first-order-7",
        "tracekit trace first-order-7 --format json",
        "tracekit trace 4bf92f3577b34da6a3ce929d0e0e4736",
    ),
)
@click.argument("request_id", metavar="ID")
@backend_options
@format_option
@click.option("--logs/--no-logs", default=True, show_default=True,
              help="Show log lines under their span.")  # fmt: skip
@click.option("--raw-times", is_flag=True, help="Show recorded times, without clock-skew fixes.")
@click.option("--service", metavar="NAME", callback=service_name,
              help="Jaeger only: search this service's spans.")  # fmt: skip
@click.option("--max-spans", type=click.IntRange(1, MAX_SPANS_LIMIT), default=MAX_SPANS,
              show_default=True,
              help="Show at most this many spans, the earliest (a warning says so).")  # fmt: skip
@collecting_less_often()
def trace(
    request_id: str, store: str | None, tempo: str | None, jaeger: str | None, timeout: float,
    output_format: str | None, logs: bool, raw_times: bool, service: str | None, max_spans: int,
) -> None:  # fmt: skip
    """Show the path of one request: ID is a correlation ID or a trace ID (16 to 32 hex)."""
    from tracekit.path import reconstruct

    query = check_id(request_id)
    require_jaeger_for_service(service, jaeger)
    source = open_source(store, tempo, jaeger, timeout=timeout, service=service)
    try:
        path = reconstruct(
            source, query, with_logs=logs, adjust_skew=not raw_times, max_spans=max_spans
        )
    except BackendError as error:
        fail(str(error), EXIT_ERROR)
    if path is None:
        hint = (
            _traceparent_hint(query) or _searched_back_hint(source, query) or where_to_look(source)
        )
        fail(f"no request found for {query!r:.80}{hint}", EXIT_NOT_FOUND)
    chosen = resolve_format(output_format)
    if chosen == "json":
        emit_json(path.to_json())
    elif chosen == "text":
        from tracekit_cli.render.text import render_path

        emit_text(lambda width: render_path(path, width, with_logs=logs), NARROWEST_READ_VIEW)
    else:
        from tracekit_cli.render import rich_view

        color = not no_color()
        emit_text(
            lambda width: rich_view.format_path(path, width, color=color, with_logs=logs),
            NARROWEST_READ_VIEW,
        )


def _searched_back_hint(source: object, query: str) -> str:
    """How far back a remote backend was searched for the correlation ID ``query``."""
    window = searched_back(source, [query])
    return f": the correlation ID is searched for {window}" if window else ""


def _traceparent_hint(query: str) -> str:
    """What to type instead when ``query`` is a whole ``traceparent``: its trace ID (the form of
    a correlation ID, so it was looked up as one)."""
    trace_id = traceparent_trace_id(query)
    if trace_id is None:
        return ""
    return f": it is a traceparent header, whose trace ID is {trace_id} (tracekit trace {trace_id})"
