"""``tracekit canary``: is the canary version of a service worse than its baseline?

The command parses options, reads the samples (embedded store or Prometheus), asks the library for
a verdict (``tracekit.canary``) and renders it. Exit status: 0 pass, 1 fail, 2 usage or backend
error, 3 marginal, 4 inconclusive; ``--gate strict`` makes 3 and 4 a 1 for pipelines that only
know zero and non-zero.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tracekit.records import BackendError
from tracekit_cli.headers import HEADERS_ENV, parse_headers
from tracekit_cli.options import (
    DURATION,
    EXIT_ERROR,
    NARROWEST_READ_VIEW,
    UNIT_SECONDS,
    Number,
    StoreOption,
    existing_store,
    fail,
    format_option,
    one_line,
    parse_since,
    require_value,
    resolve_format,
    typed_route,
)
from tracekit_cli.output import Command, emit_json, emit_rich, emit_text, examples

if TYPE_CHECKING:
    from tracekit.canary import Subject, Verdict, VersionSamples

F = TypeVar("F", bound=Callable[..., Any])
METRIC_NAMES = ("latency", "tail_latency", "error_rate")  # tracekit.canary.METRICS
MAX_NAME = 256


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A service or version as typed: refused when empty, too long or unprintable."""
    stripped = value.strip()
    if not stripped or len(stripped) > MAX_NAME or not stripped.isprintable():
        raise click.BadParameter(f"1-{MAX_NAME} printable characters, got {stripped[:40]!r}")
    return stripped


def _routes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Each ``--route`` as ``typed_route`` reads one: ``--route "$ROUTE"`` with the variable
    unset judged a route named '', an inconclusive verdict (exit 4, 1 with ``--gate strict``)
    that blamed the traffic, and a route typed with a newline after it was found nowhere."""
    return tuple(route for value in values if (route := typed_route(ctx, param, value)))


def _options(decorators: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Apply ``decorators`` in the order listed (as --help shows them)."""

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


_what_and_where = _options([
    click.option("--service", required=True, metavar="NAME", callback=_name,
                 help="The service (service.name) whose versions are compared."),
    click.option("--baseline", required=True, metavar="VERSION", callback=_name,
                 help="The version running now (service.version)."),
    click.option("--canary", "canary_version", required=True, metavar="VERSION", callback=_name,
                 help="The new version under test."),
    click.option("--store", metavar="PATH", cls=StoreOption),
    click.option("--prometheus", metavar="URL",
                 help="Read tracekit's histograms from Prometheus' HTTP API instead."),
    click.option("--timeout", type=Number(0.1, 300), default=10.0, show_default=True,
                 help="Seconds to wait for Prometheus per query."),
    click.option("--header", "headers", metavar="NAME=VALUE", multiple=True,
                 help="Send this header to --prometheus (tenant, credentials); repeatable "
                 f"[also: ${HEADERS_ENV}]."),
    click.option("--since", metavar="WHEN", help="Window start: 30m, 2h, or an ISO 8601 time "
                 "[default: 30m, when --start is not given]."),
    click.option("--start", metavar="WHEN", help="Window start (same forms as --since)."),
    click.option("--end", metavar="WHEN", help="Window end [default: now]."),
    click.option("--route", "routes", multiple=True, metavar="ROUTE", callback=_routes,
                 help="Only this route or destination (repeatable) [default: every route with"
                 " data]."),
])  # fmt: skip

_how_strict = _options([
    click.option("--gate", type=click.Choice(["normal", "strict"]), default="normal",
                 show_default=True,
                 help="strict: exit 1 instead of 3 (marginal) or 4 (inconclusive)."),
    click.option("--max-looks", type=click.IntRange(1, 1000), default=1, show_default=True,
                 help="Looks planned during this rollout; each spends alpha/N of the budget."),
    click.option("--critical", multiple=True, type=click.Choice(METRIC_NAMES), help="Also a "
                 "metric whose failure fails the verdict (repeatable); error_rate always is."),
    click.option("--alpha", type=Number(0.001, 0.2), default=0.05, show_default=True,
                 help="Error budget: chance of failing a canary that is no worse."),
    click.option("--max-latency-increase", type=Number(1, 1000), default=20.0,
                 show_default=True, metavar="PERCENT",
                 help="Tolerated slowdown of the typical request."),
    click.option("--max-tail-increase", type=Number(1, 1000), default=50.0,
                 show_default=True, metavar="PERCENT",
                 help="Tolerated growth of the tail quantile."),
    click.option("--max-error-increase", type=Number(0.01, 50), default=1.0,
                 show_default=True, metavar="POINTS",
                 help="Tolerated rise of the error rate, in percentage points."),
    click.option("--tail-quantile", type=Number(0.5, 0.999), default=0.95,
                 show_default=True, help="The quantile the tail test looks above."),
])  # fmt: skip


@click.command(
    cls=Command,
    short_help="Judge a canary version against its baseline.",
    epilog=examples(
        "tracekit canary --service shop --baseline 1.4 --canary 1.5",
        "tracekit canary --service shop --baseline 1.4 --canary 1.5 --gate strict",
    ),
)
@_what_and_where
@format_option
@_how_strict
def canary(
    service: str, baseline: str, canary_version: str, store: str | None, prometheus: str | None,
    timeout: float, headers: tuple[str, ...], since: str | None, start: str | None, end: str | None,
    routes: tuple[str, ...], output_format: str | None, gate: str, max_looks: int,
    critical: tuple[str, ...], alpha: float, max_latency_increase: float,
    max_tail_increase: float, max_error_increase: float, tail_quantile: float,
) -> None:  # fmt: skip
    """Judge a canary version against its baseline: pass, marginal, fail or inconclusive."""
    _require_numpy()
    from tracekit.canary import Settings, Subject, exit_code, judge

    window = _window(since, start, end)
    require_value("--store", store)
    require_value("--prometheus", prometheus)
    if store is not None and prometheus is not None:
        raise click.UsageError("choose one source: --store or --prometheus")
    if headers and prometheus is None:
        fail("--header is for a remote backend: use it with --prometheus", EXIT_ERROR)
    if baseline.strip() == canary_version.strip():  # a stale pipeline argument, a wrong label
        raise click.UsageError(
            f"--baseline and --canary are the same version ({one_line(baseline, 60)!r}):"
            " the canary would be judged against itself"
        )
    settings = Settings(
        alpha=alpha, max_looks=max_looks, latency_tolerance=1 + max_latency_increase / 100,
        tail_tolerance=1 + max_tail_increase / 100, error_tolerance=max_error_increase / 100,
        tail_quantile=tail_quantile, critical=frozenset({"error_rate", *critical}),
    )  # fmt: skip
    source = "prometheus" if prometheus is not None else "store"
    subject = Subject(service, baseline, canary_version, *window, source)
    try:
        samples = _read(subject, store, prometheus, timeout, headers)
    except (BackendError, ValueError) as error:  # ValueError: a URL urllib cannot parse, a header
        fail(str(error), EXIT_ERROR)
    verdict = judge(subject, *samples, settings, routes or None)
    if not all(samples):  # a version with no requests at all: which ones are there?
        found = _versions(subject, store, prometheus, timeout, headers)
        verdict = replace(verdict, warnings=(*verdict.warnings, _versions_served(subject, found)))
    _emit(verdict, resolve_format(output_format), strict=gate == "strict")
    sys.exit(exit_code(verdict.verdict, strict=gate == "strict"))


def _require_numpy() -> None:
    """The statistics run on numpy, which the ``canary`` extra installs."""
    try:
        import numpy  # noqa: F401 - only whether it imports
    except ImportError:
        fail("tracekit canary needs numpy: pip install 'tracekit[canary]'", EXIT_ERROR)


DEFAULT_WINDOW_NS = 30 * 60 * 10**9


def _window(since: str | None, start: str | None, end: str | None) -> tuple[int, int]:
    if since and start:
        raise click.UsageError("give --since or --start, not both")
    now = time.time()
    given_end = parse_since(end, now, "--end")
    end_ns = int(now * 1e9) if given_end is None else given_end
    given_start = parse_since(start or since, now, "--start" if start else "--since")
    # the default window is the 30 minutes before its end, wherever --end puts that
    start_ns = end_ns - DEFAULT_WINDOW_NS if given_start is None else given_start
    if start_ns >= end_ns:
        raise click.UsageError(_backwards(("--start", start) if start else ("--since", since), end))
    return start_ns, end_ns


def _backwards(typed_start: tuple[str, str | None], typed_end: str | None) -> str:
    """What to type when the window ends before it starts. A duration counts back from now in
    every option (as Grafana's ``now-30m`` and journalctl's ``--since -30m`` do), so ``--since
    30m --end 2h`` starts after it ends; its likely meaning, the 30 minutes before ``--end``, is
    named as ``--start`` (both durations added up) with that ``--end``. ``--start`` is a time,
    not a length: ``--start 2h --end 3h`` is named the other way round."""
    option, start = typed_start[0], (typed_start[1] or "").strip()
    end = (typed_end or "now").strip()
    said = (f"the window must start before it ends: {option} {one_line(start, 40)} is not"
            f" before --end {one_line(end, 40)}")  # fmt: skip
    length, back = DURATION.match(start), DURATION.match(end)
    if length is None or back is None:
        return said
    # named as tracekit writes durations, not as typed: "0030m" of 300 digits stays "30m"
    length_s, back_s = _seconds(length), _seconds(back)
    if option == "--start":  # a time, not a length: the two were typed the wrong way round
        if length_s == back_s:
            return said
        return (f"{said} (a duration counts back from now); for the window between them, type"
                f" --start {_duration(back_s)} --end {_duration(length_s)}")  # fmt: skip
    if not length_s:  # --since 0s: a window of no length, which no --start names either
        return said
    earlier = _duration(back_s + length_s)
    return (f"{said} (a duration counts back from now); for the {_duration(length_s)} before"
            f" --end, type --start {earlier} --end {_duration(back_s)}")  # fmt: skip


def _seconds(duration: re.Match[str]) -> float:
    return float(duration.group(1)) * UNIT_SECONDS[duration.group(2)]


def _duration(seconds: float) -> str:
    """``seconds`` in the largest unit that holds it whole (``9000`` -> ``150m``)."""
    for unit in ("d", "h", "m", "s"):
        count = seconds / UNIT_SECONDS[unit]
        if count == int(count):
            return f"{int(count)}{unit}"
    # to the nanosecond, as --since reads it: 1.5ms and 2ms are 3.5ms, not 4ms
    return f"{seconds * 1000:.6f}".rstrip("0").rstrip(".") + "ms"


def _read(
    subject: Subject, store: str | None, prometheus: str | None, timeout: float,
    typed_headers: tuple[str, ...],
) -> tuple[VersionSamples, VersionSamples]:  # fmt: skip
    versions = (subject.baseline_version, subject.canary_version)
    window = (subject.start_unix_nano, subject.end_unix_nano)
    if prometheus is not None:
        from tracekit.canary.prometheus import samples_from_prometheus

        headers = parse_headers(typed_headers, os.environ.get(HEADERS_ENV))
        return samples_from_prometheus(prometheus, subject.service, versions, *window, timeout,
                                       headers=headers)  # fmt: skip
    from tracekit.canary import samples_from_store
    from tracekit.store import Store

    return samples_from_store(Store(existing_store(store)), subject.service, versions,
                              *window)  # fmt: skip


MAX_VERSIONS_SHOWN = 20
MAX_VERSION_SHOWN = 80  # characters of each


def _versions(
    subject: Subject, store: str | None, prometheus: str | None, timeout: float,
    typed_headers: tuple[str, ...],
) -> set[str | None]:  # fmt: skip
    """The versions of the service with requests in the window, from the source ``_read`` read."""
    window = (subject.start_unix_nano, subject.end_unix_nano)
    try:
        if prometheus is not None:
            from tracekit.canary.prometheus import versions_from_prometheus

            headers = parse_headers(typed_headers, os.environ.get(HEADERS_ENV))
            return versions_from_prometheus(prometheus, subject.service, *window, timeout,
                                            headers=headers)  # fmt: skip
        from tracekit.store import Store

        return Store(existing_store(store)).versions_served(subject.service, *window)
    except (BackendError, ValueError) as error:
        fail(str(error), EXIT_ERROR)


def _versions_served(subject: Subject, found: set[str | None]) -> str:
    """Which versions of the service have requests in the window: shows a version typed
    otherwise than the services label it (``1.1.0`` for ``1.1``) or a misspelled service."""
    if not found:
        return f"no requests of service {subject.service} in the window"
    named = sorted(version for version in found if version is not None)
    # label values of the source's: as long and as odd as whoever set them made them
    shown = [one_line(version, MAX_VERSION_SHOWN) for version in named[:MAX_VERSIONS_SHOWN]]
    if len(named) > len(shown):
        shown.append(f"and {len(named) - len(shown)} more")
    if None in found:
        shown.append("(none: set TRACEKIT_SERVICE_VERSION)")
    return f"versions of {subject.service} with requests in the window: {', '.join(shown)}"


def _emit(verdict: Verdict, chosen: str, *, strict: bool) -> None:
    from tracekit.canary import to_json
    from tracekit_cli.render import canary as view

    if chosen == "json":
        emit_json(to_json(verdict))
    elif chosen == "text":
        emit_text(
            lambda width: view.render_text(verdict, width, strict=strict), NARROWEST_READ_VIEW
        )
    else:
        emit_rich(
            lambda console: view.render_rich(console, verdict, strict=strict), NARROWEST_READ_VIEW
        )
