"""``tracekit diff``: what differs between two requests, or between two sets of requests.

``tracekit diff A B`` compares two requests (correlation or trace IDs); ``tracekit diff --service
S --a K=V --b K=V`` compares the requests entering S under two attribute values (two versions,
two hosts). The command parses options, asks the library (``tracekit.diff``) and renders. Exit
status like Unix ``diff``: 0 no difference that counts, 1 differences, 2 usage or backend error,
3 A or B not found.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from tracekit.records import BackendError, SpanSource
from tracekit_cli.options import (
    EXIT_ERROR,
    MAX_ID_CHARS,
    NARROWEST_READ_VIEW,
    Number,
    backend_options,
    check_id,
    fail,
    format_option,
    no_color,
    one_line,
    open_source,
    parse_since,
    resolve_format,
    searched_back,
    traceparent_trace_id,
    typed_route,
    warn,
    where_to_look,
)
from tracekit_cli.output import Command, collecting_less_often, emit_json, emit_text, examples

if TYPE_CHECKING:
    from tracekit.diff import FailOn, PairDiff, SetDiff, Thresholds
    from tracekit.diff.select import Selector
    from tracekit.path import Path

EXIT_SAME, EXIT_DIFFERENT, EXIT_MISSING = 0, 1, 3


@click.command(
    cls=Command,
    short_help="Show what differs between two requests or two sets.",
    epilog=examples(
        "tracekit diff first-order-7 first-order-8",
        "tracekit diff --service shop --a service.version=1.4 --b service.version=1.5",
    ),
)
@click.argument("requests", nargs=-1, metavar="[A B]")
@backend_options
@format_option
@click.option(
    "--service", metavar="NAME", help="Set form: the service whose requests are compared."
)
@click.option(
    "--a",
    "a_match",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set form: requests of set A carry this (repeatable: all must hold).",
)
@click.option(
    "--b",
    "b_match",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set form: requests of set B carry this (repeatable).",
)
@click.option(
    "--route",
    metavar="ROUTE",
    callback=typed_route,
    help="Set form: only requests entering the service on this route.",
)
@click.option(
    "--since",
    default="1h",
    show_default=True,
    metavar="WHEN",
    help="Set form: requests since then (15m, 2h, 7d or an ISO 8601 time).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 5000),
    default=500,
    show_default=True,
    help="Set form: the newest requests compared per set.",
)
@click.option(
    "--min-requests",
    type=click.IntRange(2, 1_000_000),
    default=20,
    show_default=True,
    help="Set form: fewer requests per set is too few to tell.",
)
@click.option(
    "--min-delta-ms",
    type=Number(min=0),
    default=5.0,
    show_default=True,
    help="Smallest timing change that counts, in milliseconds...",
)
@click.option(
    "--min-delta-pct",
    type=Number(min=0),
    default=10.0,
    show_default=True,
    help="... and in percent of the value before.",
)
@click.option("--fail-on", metavar="KINDS", help="Only these make the exit status 1: "
              "structure, retries, errors, order, timing, resources, slower[=20%|=50ms] "
              "(comma-separated) [default: all].")  # fmt: skip
@collecting_less_often()
def diff(
    requests: tuple[str, ...], store: str | None, tempo: str | None, jaeger: str | None,
    timeout: float, output_format: str | None, service: str | None, a_match: tuple[str, ...],
    b_match: tuple[str, ...], route: str | None, since: str, limit: int, min_requests: int,
    min_delta_ms: float, min_delta_pct: float, fail_on: str | None,
) -> None:  # fmt: skip
    """Show what differs between two requests (A B: correlation or trace IDs), or between two
    sets of requests (--service S --a KEY=VALUE --b KEY=VALUE)."""
    from tracekit.diff import Thresholds, parse_fail_on

    try:
        counted = parse_fail_on(fail_on)
    except ValueError as error:
        fail(str(error), EXIT_ERROR)
    thresholds = Thresholds(min_delta_ms, min_delta_pct)
    set_form = service is not None or a_match or b_match or route is not None
    if set_form:
        if requests:
            fail("give A B or --service with --a and --b, not both", EXIT_ERROR)
        if fail_on is not None:
            _warn_unreported(counted)
        result: PairDiff | SetDiff = _compare_sets(
            service, a_match, b_match, route, since, limit, min_requests, thresholds,
            lambda: open_source(store, tempo, jaeger, timeout=timeout, newest_of=service),
        )  # fmt: skip
    else:
        if len(requests) != 2:
            fail("give two requests (A B) or a set form (--service S --a K=V --b K=V)",
                 EXIT_ERROR)  # fmt: skip
        _refuse_set_options()
        source = open_source(store, tempo, jaeger, timeout=timeout)
        result = _compare_pair(source, check_id(requests[0]), check_id(requests[1]), thresholds)
    _emit(result, resolve_format(output_format), counted)
    sys.exit(_exit_status(result, counted))


def _warn_unreported(counted: FailOn) -> None:
    """``--fail-on order`` (or ``resources``) in the set form would gate on nothing, silently:
    say so (a pipeline's list shared with the pair form keeps working)."""
    from tracekit.diff.sets import REPORTED

    unreported = [name for name in sorted(counted.categories) if name not in REPORTED]
    if unreported:
        warn(f"--fail-on {','.join(unreported)}: the set form reports no such change (it "
             f"reports {', '.join(REPORTED)}, slower); that part never fails")  # fmt: skip


def _refuse_set_options() -> None:
    """Set-form options given with two requests would be ignored without a word: refuse them."""
    ctx = click.get_current_context()
    for name in ("since", "limit", "min_requests"):
        if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT):
            option = "--" + name.replace("_", "-")
            fail(f"{option} is for the set form (--service S --a K=V --b K=V), not A B",
                 EXIT_ERROR)  # fmt: skip


def _compare_pair(source: SpanSource, a: str, b: str, thresholds: Thresholds) -> PairDiff:
    from tracekit.diff import compare_paths
    from tracekit.path import reconstruct

    try:
        paths = [reconstruct(source, query, with_logs=False) for query in (a, b)]
        missing = list(dict.fromkeys(q for q, p in zip((a, b), paths, strict=True) if p is None))
        if missing:
            fail(_not_comparable(source, missing), EXIT_MISSING)
        assert paths[0] is not None and paths[1] is not None
        first, second, notes = _apart(source, a, b, paths[0], paths[1])
    except BackendError as error:
        fail(str(error), EXIT_ERROR)
    result = compare_paths(first, second, thresholds)
    result.warnings[:0] = notes
    return result


def _not_comparable(source: SpanSource, missing: list[str]) -> str:
    """Why requests with no span cannot be compared: unknown, or (every service on their way in
    correlation-only mode) only log lines carry them, which `tracekit trace` shows."""
    from tracekit.path import reconstruct
    from tracekit.records import CorrelatedLogSource

    # only a store holds log lines by correlation ID: Tempo or Jaeger would be asked again
    logs_held = isinstance(source, CorrelatedLogSource)
    logged = [q for q in missing if logs_held and reconstruct(source, q) is not None]
    unknown = [q for q in missing if q not in logged]
    named = " and ".join(repr(q)[:80] + _trace_id_inside(q) for q in unknown)
    said = [f"no request found for {named}{where_to_look(source)}"] if unknown else []
    window = searched_back(source, unknown)
    said += [f"correlation IDs are searched for {window}"] if window else []
    if logged:
        verb = "has" if len(logged) == 1 else "have"
        said.append(f"{_quoted(logged)} {verb} only log lines, no span to compare "
                    "(tracekit trace shows them)")  # fmt: skip
    return "; ".join(said)


def _quoted(queries: list[str]) -> str:
    return " and ".join(repr(q)[:80] for q in queries)


def _trace_id_inside(query: str) -> str:
    """`` (a traceparent header, whose trace ID is ...)`` for a whole ``traceparent``, as
    ``tracekit trace`` names it: the ID to type instead."""
    trace_id = traceparent_trace_id(query)
    return f" (a traceparent header, whose trace ID is {trace_id})" if trace_id else ""


def _apart(
    source: SpanSource, a: str, b: str, first: Path, second: Path
) -> tuple[Path, Path, list[str]]:
    """Two trace IDs of one request (traces that share a correlation ID, a session's or a
    job's) are compared as two traces, each with the traces linked to it: the path of either
    joins both, and the diff compared one request with itself. Other overlaps are said."""
    from tracekit.path import looks_like_trace_id, reconstruct, trace_id_of

    if a == b or (looks_like_trace_id(a) and trace_id_of(a) == trace_id_of(b)):
        return first, second, ["A and B are the same ID: the request is compared with itself"]
    if not set(first.trace_ids) & set(second.trace_ids):
        return first, second, []
    shared = one_line(first.correlation_id or "", 80)
    if looks_like_trace_id(a) and looks_like_trace_id(b):
        own_a, own_b = (
            reconstruct(source, q, with_logs=False, by_correlation=False) for q in (a, b)
        )
        if own_a and own_b and not set(own_a.trace_ids) & set(own_b.trace_ids):
            note = (f"A and B share the correlation ID {shared!r}: each trace is compared with "
                    "the traces linked to it, not with every trace of that ID")  # fmt: skip
            return own_a, own_b, [note]
    return first, second, [_overlap(first, second)]


def _overlap(first: Path, second: Path) -> str:
    """One request named twice (a trace and its correlation ID, two linked traces), or two
    requests that share a trace: a batch consumer that took a message of each."""
    shared = set(first.trace_ids) & set(second.trace_ids)
    if shared == set(first.trace_ids) == set(second.trace_ids):
        return "A and B are one request (they share traces): compared with itself"
    if len(shared) == 1:
        return "A and B share 1 trace (a batch both fed, say): what it holds counts in both"
    return (
        f"A and B share {len(shared)} traces (a batch both fed, say): what they hold counts in both"
    )


def _compare_sets(
    service: str | None, a_match: tuple[str, ...], b_match: tuple[str, ...], route: str | None,
    since: str, limit: int, min_requests: int, thresholds: Thresholds,
    open_backend: Callable[[], SpanSource],
) -> SetDiff:  # fmt: skip
    from tracekit.diff import SetSettings, compare_sets, find_request_sets
    from tracekit.diff.select import Selector, parse_match

    if not service or not a_match or not b_match:
        fail("the set form needs --service S, --a KEY=VALUE and --b KEY=VALUE", EXIT_ERROR)
    if limit < min_requests:  # every run would end "too few to tell", however busy the window
        fail(f"--limit {limit} is below --min-requests {min_requests}: no set could be tested "
             "(raise --limit or lower --min-requests)", EXIT_ERROR)  # fmt: skip
    try:
        a = Selector(_service_name(service), parse_match(a_match), route)
        b = Selector(a.service, parse_match(b_match), route)
    except ValueError as error:
        fail(f"--a/--b {error}", EXIT_ERROR)
    since_ns = parse_since(since) or 0
    source = open_backend()
    try:
        a_paths, b_paths, notes = find_request_sets(source, a, b, since_ns, limit)
    except BackendError as error:
        fail(str(error), EXIT_ERROR)
    for note in notes:
        warn(note)
    for name, selector, found in (("A", a, a_paths), ("B", b, b_paths)):
        if not found:
            fail(f"no requests of {a.service!r:.60} with {_matched(selector)} "
                 f"since {since!r:.40} (set {name})", EXIT_MISSING)  # fmt: skip
    settings = SetSettings(thresholds, min_requests)
    return compare_sets(a_paths, b_paths, settings, (a.describe(), b.describe()))


def _matched(selector: Selector) -> str:
    """``'service.version=1.4' on route '/stock/{sku}'``: the route named as one."""
    text = ",".join(f"{key}={value}" for key, value in selector.match)
    on_route = f" on route {selector.route!r:.120}" if selector.route else ""
    return f"{text!r:.120}{on_route}"


def _service_name(value: str) -> str:
    stripped = value.strip()
    if not stripped or len(stripped) > MAX_ID_CHARS or not stripped.isprintable():
        fail(f"--service: 1-{MAX_ID_CHARS} printable characters, not {stripped[:40]!r}", EXIT_ERROR)
    return stripped


def _emit(result: PairDiff | SetDiff, chosen: str, counted: FailOn) -> None:
    from tracekit.diff import PairDiff, to_json

    if chosen == "json":
        emit_json(to_json(result, counted))
        return
    from tracekit_cli.render.diff_sets import set_document
    from tracekit_cli.render.diff_view import ASCII, UNICODE, pair_document, to_rich, to_text

    glyphs = ASCII if chosen == "text" else UNICODE
    if isinstance(result, PairDiff):
        document = pair_document(result, glyphs, counted)
    else:
        document = set_document(result, glyphs, counted)
    if chosen == "text":
        emit_text(lambda width: to_text(document, width), NARROWEST_READ_VIEW)
    else:
        color = not no_color()
        emit_text(lambda width: to_rich(document, width, color=color), NARROWEST_READ_VIEW)


def _exit_status(result: PairDiff | SetDiff, counted: FailOn) -> int:
    from tracekit.diff import reasons

    return EXIT_DIFFERENT if reasons(result.changes, counted) else EXIT_SAME
