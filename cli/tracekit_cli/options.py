"""Options shared by the read commands (trace, search, services) and the helpers behind them.

Backend choice: ``--store PATH`` (default: the embedded store tracekit writes), ``--tempo URL`` or
``--jaeger URL``, with ``--header NAME=VALUE`` (and ``TRACEKIT_BACKEND_HEADERS``) for a remote
backend's tenant and credentials. Output: ``--format rich|text|json``, rich on a terminal and
text when piped; the rich view is in colour on a terminal, not when piped nor with ``NO_COLOR``
or ``TERM=dumb``, and ``FORCE_COLOR`` asks for it anywhere (``NO_COLOR`` still wins).
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import click

from tracekit._digits import ascii_int
from tracekit._utf8 import without_terminal_sequences
from tracekit.records import BackendError, SpanSource
from tracekit_cli.headers import HEADERS_ENV, parse_headers

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("rich", "text", "json")
MAX_ID_CHARS = 256
# Prometheus's units, its year 365 days; case matters, as there (an M could be a month)
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*$")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# --since, --start and --end are unix nanoseconds below this in magnitude: 64 signed bits, as the
# store (SQLite's INTEGER) keeps times; that is from 1677-09-21 00:12:43 to 2262-04-11.
UNIX_NANO_LIMIT = 2**63
# ... and from the first whole day on: 1677-09-22 00:00 UTC. A window's start computed before a
# given time (canary's 30 minutes before --end) then still fits in 64 bits.
EARLIEST_UNIX_NANO = -9_223_286_400 * 10**9

# trace, search and services lay out down to this width (a split pane, a phone's SSH client);
# lines wider than the terminal wrap there and break the tree and tables apart
NARROWEST_READ_VIEW = 20

EXIT_NOT_FOUND = 1
EXIT_ERROR = 2


class Number(click.FloatRange):
    """A float option in a range; ``nan`` and infinities are refused like any value out of it
    (``click.FloatRange`` lets NaN through: it compares false with both bounds)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


class StoreOption(click.Option):
    """``--store``, whose help shows the default this environment resolves to, and whose ``~`` is
    expanded as in ``$TRACEKIT_STORE`` (a shell leaves ``--store=~/x.db`` as typed)."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        """The path given, ``~`` and ``~user`` expanded; a ``pathlib.Path`` stays one. An empty
        one (``--store "$UNSET"``) is refused before the type makes it ``.``: the demo would
        write into the default store and the collector fail on a folder."""
        require_value("--store", value if isinstance(value, str) else None)
        value = super().process_value(ctx, value)
        if isinstance(value, Path):
            return value.expanduser()
        return os.path.expanduser(value) if isinstance(value, str) else value  # no --store

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        """Help with the default path worked out now (``$TRACEKIT_STORE``, ``$XDG_DATA_HOME``)."""
        try:
            resolved = f"{default_store()}; "
        except click.UsageError:  # no home directory: the help still shows the rule
            resolved = ""
        self.help = (
            f"Embedded store file [default: {resolved}$TRACEKIT_STORE, else"
            " $XDG_DATA_HOME/tracekit/tracekit.db, else ~/.local/share/tracekit/tracekit.db]."
        )
        return super().get_help_record(ctx)


def default_store() -> Path:
    """Where the store is when ``--store`` is not given; a usage error (one line, exit 2) when
    that would be under a home directory this process has none of."""
    from tracekit.store import default_store_path
    from tracekit.store._paths import NoStorePathError

    try:
        return default_store_path()
    except NoStorePathError as error:
        raise click.UsageError(f"{error} or pass --store") from None


def backend_options(command: F) -> F:
    """``--store``, ``--tempo``, ``--jaeger`` and ``--timeout`` for remote backends."""
    decorators = [
        click.option("--store", "store", metavar="PATH", cls=StoreOption),
        click.option("--tempo", metavar="URL", help="Read from Grafana Tempo's HTTP API."),
        click.option("--jaeger", metavar="URL", help="Read from Jaeger's api_v3 (HTTP)."),
        click.option("--timeout", type=Number(0.1, 600), default=30.0, show_default=True,
                     help="Seconds a remote backend's answers may take, for the whole command "
                     "(every request and retry); past them, exit 2."),
        click.option("--header", metavar="NAME=VALUE", multiple=True, expose_value=False,
                     callback=_keep_headers, help="Send this header to --tempo or --jaeger "
                     f"(tenant, credentials); repeatable [also: ${HEADERS_ENV}]."),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _keep_headers(ctx: click.Context, _: click.Parameter, value: tuple[str, ...]) -> None:
    """Keep ``--header`` values for ``open_source`` (commands need no parameter of their own)."""
    ctx.meta["tracekit.backend_headers"] = value


def format_option(command: F) -> F:
    """``--format rich|text|json`` (default: rich on a terminal, text when piped)."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format [default: rich on a terminal, text when piped].",
    )(command)


# What the rich views draw beyond ASCII: tree guides, markers, bars, arrows, separators.
RICH_GLYPHS = "◆└├─│⏳✗→█…·⚠"


def resolve_format(requested: str | None) -> str:
    """The format to use: the one asked for, else rich on a terminal that can show its
    characters, and text otherwise (a pipe, or a latin-1 or ascii terminal: there the rich
    view's guides, markers and bars were each a '?'; the text view draws them in ASCII)."""
    if requested:
        return requested
    return "rich" if sys.stdout.isatty() and _stdout_writes(RICH_GLYPHS) else "text"


def _stdout_writes(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeError, LookupError):
        return False
    return True


def require_value(option: str, value: str | None) -> None:
    """Exit 2 when ``option`` was given an empty value (``--tempo "$UNSET_VARIABLE"``): reading
    the default store instead would answer a question nobody asked."""
    if value is not None and not value.strip():
        fail(f"{option} was given an empty value", EXIT_ERROR)


def require_jaeger_for_service(service: str | None, jaeger: str | None) -> None:
    """Exit 2 when ``--service`` (which only Jaeger's per-service search takes) comes without
    ``--jaeger``: ignoring it would show every service as if it were the one asked for."""
    if service is not None and jaeger is None:
        fail("--service is for --jaeger: the store and Tempo read every service", EXIT_ERROR)


def open_source(
    store: str | None, tempo: str | None, jaeger: str | None, *, timeout: float = 10.0,
    service: str | None = None, newest_of: str | None = None,
) -> SpanSource:  # fmt: skip
    """The read backend the options name (the embedded store when none does); exit 2 with one
    line when the options cannot make one (two backends, a bad URL or header). ``service``:
    Jaeger searches that service alone; ``newest_of``: a remote backend's newest spans are
    those of that service's traces (``diff``'s set form), its requests found as ``trace``
    finds them."""
    for option, value in (("--store", store), ("--tempo", tempo), ("--jaeger", jaeger)):
        require_value(option, value)
    if sum(1 for choice in (store, tempo, jaeger) if choice is not None) > 1:
        fail("choose one backend: --store, --tempo or --jaeger", EXIT_ERROR)
    typed = click.get_current_context().meta.get("tracekit.backend_headers", ())
    if typed and not (tempo or jaeger):
        fail("--header is for a remote backend: use it with --tempo or --jaeger", EXIT_ERROR)
    try:
        return _remote_source(tempo, jaeger, timeout, typed, service, newest_of) or _store(store)
    except (BackendError, ValueError) as error:
        fail(str(error), EXIT_ERROR)


def _remote_source(
    tempo: str | None, jaeger: str | None, timeout: float, typed: tuple[str, ...],
    service: str | None, newest_of: str | None,
) -> SpanSource | None:  # fmt: skip
    if not (tempo or jaeger):
        return None
    headers = parse_headers(typed, os.environ.get(HEADERS_ENV))
    if tempo:
        from tracekit.backends.tempo import TempoSource

        return TempoSource(tempo, timeout=timeout, total_timeout=timeout, service=newest_of,
                           headers=headers, notify=warn)  # fmt: skip
    from tracekit.backends.jaeger import JaegerSource

    return JaegerSource(jaeger or "", timeout=timeout, total_timeout=timeout, service=service,
                        headers=headers, notify=warn, newest_of=newest_of)  # fmt: skip


def _store(store: str | None) -> SpanSource:
    from tracekit.store import Store

    return Store(existing_store(store))


def existing_store(store: str | None) -> Path:
    """The store file to read (``--store``, else the default); exit 2 with what to do when
    there is none yet, as on a new user's first command, or when the path is a folder."""
    path = Path(store) if store else default_store()
    try:
        is_folder = stat.S_ISDIR(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        fail(f"no tracekit store at {shown_path(path)} yet: 'tracekit demo' makes one, as do"
             " 'tracekit collector' and services run with TRACEKIT_EXPORTER=store (--store"
             " reads another)", EXIT_ERROR)  # fmt: skip
    except OSError as error:  # another account's private folder, a symlink loop
        fail(f"store {shown_path(path)}: {reason(error)}", EXIT_ERROR)
    if is_folder:
        refuse_folder(path)
    return path


def refuse_folder(path: Path) -> None:
    """Exit 2 when ``path`` is a folder, saying what to name instead: the store is a file. A
    path that cannot be looked at (a name too long, a folder not to be searched) is left to the
    store's opening, which says why."""
    try:
        folder = path.is_dir()
    except OSError:  # is_dir raises all but "no such file" and its kind
        return
    if folder:
        fail(f"{shown_path(path)} is a folder, not a store: name the store file in it (such"
             f" as {shown_path(path / 'tracekit.db')})", EXIT_ERROR)  # fmt: skip


def warn(message: str) -> None:
    """One line on stderr that does not stop the command (a backend's notice)."""
    say(f"tracekit: warning: {message_line(message)}")


def fail(message: str, code: int) -> NoReturn:
    """Print one clear line on stderr and exit with ``code``."""
    say(f"tracekit: {message_line(message)}")
    sys.exit(code)


def say(line: str) -> None:
    """``line`` on stderr. A stderr whose reader has gone (``2>&1 | head -0``) or that cannot be
    written (a full disk) is let go: the exit status still tells what happened. The failed write
    made every error exit 1, read as "not found", diff's "different" or canary's "fail"."""
    try:
        click.echo(line, err=True)
    except OSError:
        stop_writing(sys.stderr)


def stop_writing(stream: TextIO) -> None:
    """Point ``stream``'s file at /dev/null: what is still buffered, and what follows, goes
    nowhere (the interpreter's flush at exit has nothing to fail on)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)  # the stream's file holds its own copy now


def reason(error: BaseException) -> str:
    """Why ``error`` happened, without the file name an ``OSError`` repeats after the reason
    (the caller's message has already named the file)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


# Characters that str.isprintable() takes but a terminal draws as nothing (Unicode's default
# ignorable code points that are letters or marks): the combining grapheme joiner, Hangul
# fillers, Khmer's inherent vowels, Mongolian variation selectors, and the other variation
# selectors where they follow ASCII or nothing: after another character they choose how it
# is drawn (an emoji's picture, "\u2764\ufe0f"; an ideograph's variant) and stay, as they do
# in a keycap ("1\ufe0f\u20e3").
DRAWS_NOTHING = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\uffa0]"
    "|(?<![^\x00-\x7f])[\ufe00-\ufe0f\U000e0100-\U000e01ef](?!\u20e3)"
)
# Characters str.isprintable() refuses that a word or an emoji is drawn with, where they are:
# a zero-width joiner or non-joiner after an emoji, a skin tone or a variation selector
# ("\U0001f469\u200d\U0001f4bb", a woman technologist) or a letter of a script they shape
# (Persian "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", Hindi, Sinhala) and before
# another character that is not ASCII; and the tags of England's, Scotland's and Wales' flags.
DRAWN_WITH = re.compile(
    "((?<=[\u0600-\u08ff\u0900-\u0dff\u2600-\u27bf\ufe0f\U0001f000-\U0001faff])"
    "[\u200c\u200d](?=[^\x00-\x7f])"
    "|(?<=\U0001f3f4)\U000e0067\U000e0062"
    "(?:\U000e0065\U000e006e\U000e0067|\U000e0073\U000e0063\U000e0074|\U000e0077\U000e006c\U000e0073)"
    "\U000e007f)"
)
# Combining marks past a letter's second (the diacritical blocks "Zalgo" text piles up): a
# terminal stacks them above and below the row, over the rows around it. Two are kept:
# Vietnamese stacks two on a letter.
_DIACRITICS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
STACKED_MARKS = re.compile(f"(?<=[{_DIACRITICS}]{{2}})[{_DIACRITICS}]+")
# what a name shows in place of a character that draws nothing or that a terminal acts on
NAME_MARK = "\ufffd"


def one_line(text: str, limit: int = 300) -> str:
    """A name (of a service, a span, a queue) on one line, at most ``limit`` characters: its
    runs of white space one space, and each character a terminal would act on or draw as
    nothing shown as U+FFFD, so that "orders" followed by a zero-width space or a bell cannot
    pass for "orders"; a letter's combining marks past its second are one U+FFFD."""
    return _flattened(text, limit, NAME_MARK, NAME_MARK)


def message_line(text: str, limit: int = 300) -> str:
    """Free text (a log record's body, a span's error message, an exception's or a server's
    words in an error line) on one line, without the terminal sequences in it: with only their
    escape character blanked, a logger's colour codes read ``[35m[1mGET /`` (werkzeug's access
    lines) and a screen clear ``[2J``. Other characters a terminal acts on are blanked, and a
    letter's combining marks past its second left out."""
    return _flattened(without_terminal_sequences(text), limit, " ", "")


def _flattened(text: str, limit: int, mark: str, stacked: str) -> str:
    """``text`` with each character not drawn as ``mark``, a letter's marks past its second
    as ``stacked``, its white space collapsed."""
    if (
        len(text) <= limit and text.isprintable() and "  " not in text and text == text.strip()
        and (text.isascii() or not (DRAWS_NOTHING.search(text) or STACKED_MARKS.search(text)))
    ):  # fmt: skip
        return text  # the common case, checked in C: 10,000-span views stay fast
    shown = DRAWS_NOTHING.sub(mark, STACKED_MARKS.sub(stacked, text))
    # (split on a capturing pattern: the odd pieces are what it found)
    pieces = DRAWN_WITH.split(shown)
    shown = "".join(
        piece if index % 2 else _marked(piece, mark) for index, piece in enumerate(pieces)
    )
    shown = " ".join(shown.split())
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _marked(text: str, mark: str) -> str:
    """``text`` with each character str.isprintable() refuses, but white space, as ``mark``."""
    return "".join(ch if ch.isprintable() or ch.isspace() else mark for ch in text)


def shown_path(path: Path) -> str:
    """``path`` as given, or quoted with escapes where it holds a character a terminal acts on
    (an escape sequence, a bell, a bidi override), which a line would send it raw."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def service_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--service`` as typed, without surrounding spaces; refused when empty, too long or
    unprintable (bytes the locale cannot decode), before any backend is asked."""
    if value is None:
        return None
    stripped = value.strip()
    if not stripped or len(stripped) > MAX_ID_CHARS or not stripped.isprintable():
        raise click.BadParameter(f"1-{MAX_ID_CHARS} printable characters, got {stripped[:40]!r}")
    return stripped


def typed_route(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--route`` as typed, without the white space around it (a value from an env file keeps
    its newline); refused when empty, as an unset variable gives it: no request has that route.
    Any other character is the route's own (a stored one with an escape is typed with it)."""
    if value is not None and not value.strip():
        raise click.BadParameter("empty: give the route, or no --route for every route")
    return None if value is None else value.strip()


def check_id(value: str) -> str:
    """A correlation or trace ID as typed, refused when empty, too long or unprintable."""
    stripped = value.strip()
    if not stripped or len(stripped) > MAX_ID_CHARS or not stripped.isprintable():
        fail(f"not a usable ID (1-{MAX_ID_CHARS} printable characters): {stripped!r:.60}", 2)
    return stripped


def traceparent_trace_id(query: str) -> str | None:
    """The trace ID inside ``query`` when it is a whole W3C ``traceparent`` (as a proxy logs it
    or a request carries it), lower case; None for anything else, and for a header a W3C
    propagator refuses (version ff, version 00 with more fields, an all-zero ID): the service
    started a new trace, so no request has the trace ID in it. The propagator's own parser
    decides (loaded on this path only: the CLI starts without OpenTelemetry); typed in upper
    case, it is read as the lower case the header carries."""
    from tracekit.propagation import parse_traceparent

    parsed = parse_traceparent(query.lower())
    return None if parsed is None else f"{parsed.trace_id:032x}"


def parse_since(value: str | None, now: float | None = None, option: str = "--since") -> int | None:
    """``15m``/``2h``/``7d``/``1w`` ago or an ISO 8601 time, as unix nanoseconds (None for None);
    a usage error naming ``option`` for anything else, and for a time the store cannot hold."""
    if value is None:
        return None
    match = DURATION.match(value)
    if match:
        current = time.time() if now is None else now
        nanos: float = (current - float(match.group(1)) * UNIT_SECONDS[match.group(2)]) * 1e9
    else:
        nanos = _iso_nanos(value, option)
    if not EARLIEST_UNIX_NANO <= nanos < UNIX_NANO_LIMIT:  # inf too: a duration of 400 digits
        raise _out_of_range(value, option)
    return int(nanos)


def _iso_nanos(value: str, option: str) -> int:
    """An ISO 8601 time as exact unix nanoseconds (a float's would be off by up to 256 ns)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{one_line(value, 40)!r}: use a duration like 15m, 2h, 7d (units ms, s, m, h, d,"
            " w, y; it counts back from now) or an ISO 8601 time",
            param_hint=f"'{option}'",
        ) from None
    try:  # whole seconds are exact as a float; the microseconds are added as an integer
        whole = int(moment.replace(microsecond=0).timestamp())
    except (ValueError, OverflowError):  # a local time the C library cannot place (year 1)
        raise _out_of_range(value, option) from None
    return whole * 10**9 + moment.microsecond * 1000


def _out_of_range(value: str, option: str) -> click.BadParameter:
    return click.BadParameter(
        f"{one_line(value, 40)!r} is out of range: times from 1677-09-22 to 2262-04-11",
        param_hint=f"'{option}'",
    )


def terminal_width(default: int = 100, narrowest: int = 40) -> int:
    """``COLUMNS`` if set, else the terminal's width, else ``default`` (clamped to
    ``narrowest``-400). A width of 0 is none known: a terminal whose size nobody set reports
    0x0 (``script``, ``docker exec -t``, CI runners), and shells treat ``COLUMNS=0`` as unset."""
    return max(narrowest, min(_dimension("COLUMNS", 0) or default, 400))


def terminal_height(default: int = 25) -> int:
    """``LINES`` if set, else the terminal's height, else ``default``.

    A rich console is given it with the width: one given neither reads ``COLUMNS`` and ``LINES``
    itself, and takes any text ``str.isdigit`` accepts to ``int`` (``LINES=²`` was an internal
    error of every rich view).
    """
    return _dimension("LINES", 1) or default


def _dimension(variable: str, axis: int) -> int:
    """The ``variable`` (a number of cells), else the terminal's size along ``axis`` (0:
    columns, 1: lines); 0 where neither is known."""
    from_environment = _dimension_from_environment(variable)
    if from_environment:
        return from_environment
    try:
        return os.get_terminal_size(sys.stdout.fileno())[axis]
    except (OSError, ValueError):
        return 0


def _dimension_from_environment(name: str) -> int | None:
    """The variable ``name`` as a number of cells, or None when it is no short ASCII number."""
    return ascii_int(os.environ.get(name, ""), 6)


def searched_back(source: object, queries: list[str]) -> str | None:
    """How far back a remote backend searched for the correlation IDs among ``queries``, and
    that an older request is there all the same, found by its trace ID (read at any age):
    "over the last 2 days; an older ...". None for the store, or when every query is a trace ID.
    """
    from tracekit.path.collect import looks_like_trace_id

    window = getattr(source, "searched_back", None)
    if window is None or all(looks_like_trace_id(q) for q in queries):
        return None
    return f"over the last {window()}; an older request is found by its trace ID"


def where_to_look(source: object) -> str:
    """For a "no request found" line, when the store was read: which one (the service may write
    another) and the command that lists what it holds (the ID may be mistyped)."""
    from tracekit.store import Store

    if not isinstance(source, Store):
        return ""
    return f" in the store {shown_path(source.path)} ('tracekit search' lists its newest requests)"


def no_color() -> bool:
    """True when the rich views are drawn without colour, decided as rich and click decide it:
    ``NO_COLOR`` (any non-empty value) asks for none; else ``FORCE_COLOR`` (any non-empty value)
    asks for colour wherever the output goes, a pipe or a dumb terminal; else there is none in a
    pipe or a file, nor on a terminal ``TERM`` names as having none (``dumb``, as Emacs' shell
    and some CI logs set it, or ``unknown``: the names rich itself takes for one)."""
    if os.environ.get("NO_COLOR"):
        return True
    if os.environ.get("FORCE_COLOR"):
        return False
    dumb = os.environ.get("TERM", "").lower() in ("dumb", "unknown")
    return dumb or not _stdout_is_a_terminal()


def _stdout_is_a_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except ValueError:  # stdout closed
        return False
