"""``tracekit demo``: run a multi-service topology on this machine and show what tracekit saw."""

from __future__ import annotations

import contextlib
import importlib
import shlex
import signal
import time
from pathlib import Path as FilePath
from typing import IO, Any, cast

import click

from tracekit.records import BackendError
from tracekit_cli.demo.typed import command_as_typed, store_flag
from tracekit_cli.options import (
    EXIT_ERROR,
    StoreOption,
    fail,
    no_color,
    reason,
    refuse_folder,
    shown_path,
    terminal_height,
    terminal_width,
)
from tracekit_cli.output import Command, OutputLost, StdoutAsWritten, fail_output_lost

PACING_SECONDS = 0.1  # between checkouts, like users arriving rather than one burst
EXPORT_INTERVAL_SECONDS = 0.2  # OTEL_BSP_SCHEDULE_DELAY of the demo's services


@click.command(cls=Command, short_help="Run eight demo services and trace their requests.")
@click.option(
    "--requests",
    "count",
    default=20,
    show_default=True,
    type=click.IntRange(1, 500),
    help="How many checkouts to send through the gateway.",
)
@click.option("--store", metavar="PATH", default=None, cls=StoreOption)
@click.option(
    "--queue",
    type=click.Choice(["auto", "redis", "embedded"]),
    default="auto",
    show_default=True,
    help="The demo's queue: redis (a redis-server of its own; needs redis-server on PATH),"
    " embedded (a SQLite queue in a temporary folder), or auto: Redis when installed.",
)
@click.option(
    "--keep-running", is_flag=True, help="Leave the services up after the summary, until Ctrl-C."
)
@click.option(
    "--canary/--no-canary",
    default=True,
    show_default=True,
    help="End with a canary verdict: one service in two versions, the new one slower.",
)
def demo(count: int, store: str | None, queue: str, keep_running: bool, canary: bool) -> None:
    """Run gateway, orders, inventory, workers and pricing replicas, then trace their requests."""
    _require_demo_packages()
    from rich.markup import escape

    from tracekit_cli.demo.topology import Topology
    from tracekit_cli.options import default_store

    console = _console()
    store_path = FilePath(store) if store else default_store()
    _create_store(store_path)
    if canary:
        from tracekit_cli.demo.canary import canary_store

        _create_store(canary_store(store_path))  # refused now, not after the step's traffic
    _stop_on_sigterm()
    started = time.monotonic()
    try:
        with Topology(store_path, queue=queue) as topology:
            console.print(f"[bold]tracekit demo[/] → store {escape(shown_path(store_path))}")
            console.print(f"queue: {topology.queue_description}")
            sent = _run_traffic(console, topology, count, stop=not keep_running)
            _show_results(console, store_path, sent, time.monotonic() - started)
            if canary:
                from tracekit_cli.demo.canary import run_canary_step

                run_canary_step(console, store_path)
            if keep_running:
                _show_ports(console, topology)
                _wait_for_ctrl_c()
    except KeyboardInterrupt as stop:
        with contextlib.suppress(OutputLost):  # a terminal that hung up takes no more lines
            console.print("stopped: every demo process was shut down")
        signum = stop.signum if isinstance(stop, _Terminated) else signal.SIGINT
        raise SystemExit(128 + signum) from None
    except OutputLost as lost:
        fail_output_lost(lost.error)
    except (RuntimeError, OSError) as error:  # a service that did not start names its log
        fail(f"demo: {error}", EXIT_ERROR)
    except BackendError as error:  # a store the steps read back, removed or replaced meanwhile
        fail(f"demo: {error}", EXIT_ERROR)


# What the demo's services and steps import, which the ``demo`` extra installs.
DEMO_PACKAGES = ("starlette", "uvicorn", "flask", "requests", "httpx", "redis", "numpy")


def _require_demo_packages() -> None:
    missing = []
    for name in DEMO_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        fail(f"tracekit demo needs {', '.join(missing)}: pip install 'tracekit[demo]'", EXIT_ERROR)


def _console() -> Any:
    """The demo's console. A reader that leaves (``tracekit demo | head -3``) does not stop
    the demo: rich would exit 1 at once; the rest goes unseen, and the demo ends as it would
    have, its services stopped, with its own status. Output that cannot be written (a full
    disk) stops it, as any command's."""
    from rich.console import Console

    stdout = cast("IO[str]", StdoutAsWritten())  # what rich uses of a file, not all of IO
    colour = not no_color()  # named, not detected: rich gives a dumb terminal none, even forced
    return Console(
        file=stdout,
        width=terminal_width(),
        height=terminal_height(),
        no_color=not colour,
        color_system="standard" if colour else None,
        highlight=False,
    )


def _create_store(path: FilePath) -> None:
    """The store, made (private, as its folders) before any service writes to it: a path that
    cannot be a store is refused before the demo starts."""
    import sqlite3

    from tracekit.config import MAX_PATH
    from tracekit.store import SchemaTooNewError, Store

    text = str(path)
    if not text.isprintable() or text != text.strip() or len(text) > MAX_PATH:
        # the services are told it in TRACEKIT_STORE, which tracekit.init refuses (or strips):
        # they would all have been started to exit at once ("demo service gateway exited")
        fail(f"cannot use store {shown_path(path)}: the demo's services take it in "
             f"TRACEKIT_STORE, which holds at most {MAX_PATH} printable characters, no "
             "surrounding spaces", EXIT_ERROR)  # fmt: skip
    refuse_folder(path)
    try:
        Store(path).create()
    except (sqlite3.Error, OSError, SchemaTooNewError) as error:
        fail(f"cannot open store {shown_path(path)}: {reason(error)}", EXIT_ERROR)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, or SIGHUP (its terminal closed), handled as Ctrl-C is: every process the demo
    started is stopped (they run in sessions of their own, so no hangup reaches them)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_on_sigterm() -> None:
    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated(signum)

    signal.signal(signal.SIGTERM, terminate)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup it stays ignored
        signal.signal(signal.SIGHUP, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # inherited ignored in background


def _run_traffic(console: Any, topology: Any, count: int, *, stop: bool) -> list[Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting 8 services", total=1)
        topology.start()
        progress.update(task, completed=1)
        task = progress.add_task("sending checkouts", total=count)
        sent = []
        for number in range(count):
            sent.append(topology.send(number))
            progress.advance(task)
            time.sleep(PACING_SECONDS)
        task = progress.add_task("waiting for workers", total=1)
        topology.wait_until_idle()
        progress.update(task, completed=1)
        task = progress.add_task("flushing telemetry", total=1)
        if stop:
            topology.stop()  # each service flushes what it still holds as it exits
        else:
            time.sleep(EXPORT_INTERVAL_SECONDS * 3)  # the services export every 200 ms
        progress.update(task, completed=1)
    return sent


def _show_ports(console: Any, topology: Any) -> None:
    for role, port in topology.ports.items():
        console.print(f"  {role:<10} http://127.0.0.1:{port}")
    console.print("one more checkout (its reply names the correlation ID to trace):")
    # soft wrap: a command broken across lines could not be pasted
    console.print(f"  {_checkout_command(topology.ports['gateway'])}", markup=False,
                  soft_wrap=True)  # fmt: skip
    console.print("services are running; press Ctrl-C to stop them")


def _checkout_command(gateway_port: int) -> str:
    """A ``curl`` that sends the gateway a checkout, as the demo's own traffic does."""
    body = '{"sku": "sku-100", "quantity": 2}'
    return (
        f"curl -s -X POST http://127.0.0.1:{gateway_port}/checkout"
        f" -H 'Content-Type: application/json' -d '{body}'"
    )


def _wait_for_ctrl_c() -> None:
    while True:
        time.sleep(3600)


def _show_results(console: Any, store_path: FilePath, sent: list[Any], elapsed: float) -> None:
    from rich.measure import Measurement
    from rich.table import Table

    from tracekit.path import reconstruct
    from tracekit.store import Store
    from tracekit_cli.demo.diff_step import show_diff
    from tracekit_cli.render.rich_view import print_lines, render_path

    source = Store(store_path)
    paths = [(request, reconstruct(source, request.correlation_id or "")) for request in sent]
    title = f"{len(sent)} checkout" + ("" if len(sent) == 1 else "s")
    table = Table(title=title, title_justify="left")
    for header in ("#", "correlation id", "order", "services", "spans", "duration", "errors"):
        table.add_column(
            header,
            justify="right" if header in ("#", "spans", "duration") else "left",
            no_wrap=header == "correlation id",  # users copy it into `tracekit trace`
            min_width=32 if header == "correlation id" else None,
            overflow="fold",
        )
    for request, path in paths:
        table.add_row(*_checkout_cells(request, path))
    unbounded = console.options.update_width(10**6)  # else the minimum is capped at the width
    if Measurement.get(console, unbounded, table).minimum <= console.width:
        console.print(table)
    else:  # a column would be cut ('sku-…') or drop out: a block per checkout instead
        console.print(title)
        print_lines(console, [line for r, p in paths for line in _checkout_block(r, p)])
    found = [(r, p) for r, p in paths if p is not None]
    slowest = max(found, key=lambda item: item[1].duration_ms, default=None)
    failed = next(((r, p) for r, p in found if p.errors), None)
    for title, item in (("slowest request", slowest), ("a failed request", failed)):
        if item is not None:
            console.rule(title)
            render_path(console, item[1])
    show_diff(console, [path for _, path in found], store_path)
    console.rule()
    _show_next_steps(console, store_path, [path for _, path in found], elapsed)


def _checkout_cells(request: Any, path: Any) -> tuple[str, ...]:
    """One checkout's row: number, correlation ID, order, services, spans, duration, errors."""
    return (
        str(request.number),
        request.correlation_id or "-",
        f"{request.sku} x{request.quantity}",
        str(len(path.services)) if path else "-",
        str(len(path.spans)) if path else "-",
        f"{path.duration_ms:.0f} ms" if path else "-",
        ", ".join(sorted({e.service for e in path.errors})) if path and path.errors else "",
    )


def _checkout_block(request: Any, path: Any) -> list[tuple[Any, bool]]:
    """One checkout on a terminal too narrow for the table: its number and correlation ID
    (whole: it is copied), then the rest, wrapped (see ``rich_view.print_lines``)."""
    number, correlation_id, order, services, spans, duration, errors = _checkout_cells(
        request, path
    )
    facts = f"  {order} · no spans stored"
    if path:
        counts = f"{_counted(services, 'service')} · {_counted(spans, 'span')}"
        facts = f"  {order} · {counts} · {duration}"
    lines = [([(f"#{number} ", "bold"), (correlation_id, "")], False), ([(facts, "")], True)]
    if errors:
        lines.append(([(f"  errors: {errors}", "red")], True))
    return lines


def _counted(count: str, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == "1" else "s")


SLOW_MS = 500  # the demo's bulk orders take about 600 ms, the others well under


def _show_next_steps(console: Any, store_path: FilePath, paths: list[Any], elapsed: float) -> None:
    """Commands to paste; a search is suggested only when it finds one of these checkouts."""
    from rich.markup import escape

    slowest = max(paths, key=lambda path: path.duration_ms, default=None)
    example = slowest.query if slowest else "<correlation-id>"
    store = store_flag(store_path)
    tracekit = command_as_typed()
    commands = [f"{tracekit} trace {example}", f"{tracekit} trace {example} --format json"]
    if any(path.errors for path in paths):
        commands.append(f"{tracekit} search --errors")
    if slowest and slowest.duration_ms >= SLOW_MS:
        commands.append(f"{tracekit} search --min-duration {SLOW_MS}")
    commands.append(f"{tracekit} services")
    console.print(f"done in {elapsed:.1f} s. Explore further:")
    for command in commands:
        # soft wrap: a hint broken across lines could not be pasted
        console.print(f"  [bold]{escape(command + store)}[/]", soft_wrap=True)
    if tracekit != "tracekit":
        activate = shlex.quote(str(FilePath(shlex.split(tracekit)[0]).parent / "activate"))
        console.print(
            f"(to type just tracekit, activate the venv: . {escape(activate)})", soft_wrap=True
        )
