"""Writing a result in the chosen format: the one place that picks rich, text or JSON."""

from __future__ import annotations

import codecs
import functools
import gc
import io
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from tracekit.records import finite_json
from tracekit_cli.options import (
    DRAWS_NOTHING,
    EXIT_ERROR,
    fail,
    no_color,
    stop_writing,
    terminal_height,
    terminal_width,
)

# json escapes C0 controls only. Every other character that is not printable is escaped too:
# those a terminal may act on (C1 such as CSI and OSC, DEL), bidirectional overrides, line
# separators, and invisible ones ("ord\u200bers" reads as "orders"; tag characters can carry
# hidden text), and the letters and marks Python calls printable that draw nothing (a Hangul
# filler, a variation selector). They can only stand inside JSON strings, where the \uXXXX
# form decodes to the same text; printable non-ASCII text stays as it is.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # escapes and all


def _escaped(match: re.Match[str]) -> str:
    """A JSON string of the document with those characters escaped. Looked at whole, as only
    strings can hold them: a call per character not printable ASCII made ``--format json`` of
    2,000 spans with CJK names hold 2 GB for 10 s (a piece per character)."""
    string = DRAWS_NOTHING.sub(_escaped_match, match.group())
    if string.isprintable():  # checked in C: nearly every string
        return string
    return "".join(char if char.isprintable() else _json_escape(char) for char in string)


def _escaped_match(match: re.Match[str]) -> str:
    """The character ``match`` found, as ``_json_escape`` writes it."""
    return _json_escape(match.group())


def _json_escape(char: str) -> str:
    """``char`` as JSON's ``\\uXXXX`` escape, which decodes to the same character."""
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: JSON's surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# Encoder chunks joined into one piece of the output. json.dumps(indent=2) held every chunk (a
# key, a value, a separator) as a string of its own before joining them: a path of 50,000 spans
# took the command from 140 MB to 467 MB for a 38 MB document.
_CHUNKS_PER_PIECE = 10_000


def emit_json(document: Any) -> None:
    """Indented JSON on stdout: non-ASCII kept, every character a terminal acts on escaped."""
    pieces = json_pieces(document, getattr(sys.stdout, "encoding", None))
    with _stdout_reader_may_leave():
        for piece in pieces:
            click.echo(piece, nl=False)
        click.echo()


def json_pieces(document: Any, encoding: str | None = None) -> list[str]:
    """``document`` as indented, standard JSON with no raw character that is not printable
    (controls, bidi, separators, invisible ones); NaN and infinities (attribute values OTLP
    allows) as OTLP/JSON's strings. Characters ``encoding`` (stdout's) lacks are escaped too.
    In pieces, to be written one after the other."""
    try:
        return _escaped_pieces(_indented(document, allow_nan=False), encoding)
    except ValueError:  # a NaN or an infinity: from a backend, or a store that kept it bare
        return _escaped_pieces(_indented(finite_json(document), allow_nan=True), encoding)


_CONTAINERS = (dict, list, tuple)


def _indented(value: Any, allow_nan: bool, indent: str = "\n") -> Iterator[str]:
    """``value`` in chunks, exactly as ``json.dumps(value, indent=2, ensure_ascii=False)`` writes
    it at the depth ``indent`` ends. That encoder runs in Python when it indents, a call per key,
    value and separator (most of what ``--format json`` took over text). Here each run of
    members holding no container is encoded in one call of the C encoder, with the separator
    indentation puts between members at that depth: only the containers are walked in Python."""
    if not isinstance(value, _CONTAINERS) or not value:  # a scalar, [] or {}: written flat
        yield _flat_encoder(indent, allow_nan).encode(value)
        return
    inner = indent + "  "
    encoder = _flat_encoder(inner, allow_nan)
    is_dict = isinstance(value, dict)
    members: Iterable[Any] = value.items() if isinstance(value, dict) else value
    yield "{" if is_dict else "["
    separator, run = inner, []
    for member in members:
        item = member[1] if is_dict else member
        if not isinstance(item, _CONTAINERS):
            run.append(member)
            continue
        if run:
            yield separator + _members(run, is_dict, encoder)
            separator, run = "," + inner, []
        yield separator + (_json_key(member[0], encoder) + ": " if is_dict else "")
        yield from _indented(item, allow_nan, inner)
        separator = "," + inner
    if run:
        yield separator + _members(run, is_dict, encoder)
    yield indent + ("}" if is_dict else "]")


def _members(run: list[Any], is_dict: bool, encoder: json.JSONEncoder) -> str:
    """Members (key-value pairs if ``is_dict``) as ``encoder`` writes them, brackets left out."""
    return encoder.encode(dict(run) if is_dict else run)[1:-1]


@functools.cache
def _flat_encoder(inner: str, allow_nan: bool) -> json.JSONEncoder:
    """The C encoder writing members at the depth ``inner`` (a newline and indentation) gives."""
    return json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan, separators=("," + inner, ": "))


def _json_key(key: Any, encoder: json.JSONEncoder) -> str:
    """A dictionary key as JSON writes it: a string, or a number, boolean or null in quotes."""
    if isinstance(key, str):
        return json.encoder.encode_basestring(key)
    return encoder.encode({key: None})[1:-7]  # '{"1": null}': the key, as json converts it


def _escaped_pieces(chunks: Iterator[str], encoding: str | None) -> list[str]:
    """The encoder's chunks joined a number at a time, each piece escaped: a chunk holds a JSON
    string whole (with what precedes it), so no string is cut between pieces."""
    pieces = []
    while batch := list(itertools.islice(chunks, _CHUNKS_PER_PIECE)):
        pieces.append(_escaped_unencodable(_escaped_nonprintable("".join(batch)), encoding))
    return pieces


def _escaped_nonprintable(text: str) -> str:
    """``text`` (JSON) with each string holding a character that is not printable escaped. Only
    strings can hold one: outside them the encoder writes ASCII, newlines and spaces. So a piece
    printable once its newlines are dropped, nearly every one, is looked at in one call in C
    (a call per string made nearly a second of a 20,000-span path's 5.6 s)."""
    if text.replace("\n", "").isprintable() and (text.isascii() or not DRAWS_NOTHING.search(text)):
        return text
    return _JSON_STRING.sub(_escaped, text)


def _escaped_unencodable(text: str, encoding: str | None) -> str:
    """``text`` with each character ``encoding`` cannot write escaped: the '?' stdout would
    print instead (a span name's emoji under latin-1) is data lost to a script reading the
    JSON, and an ID so changed finds nothing. Only strings hold characters beyond ASCII.

    The codec finds them (a call per run of them, not per character: under an ascii stdout a
    call each made 2,000 spans named in CJK cost 1.8 GB and 38 s)."""
    if encoding is None or (text.isascii() and _writes_ascii(encoding)):
        return text
    try:
        written = text.encode(encoding, _JSON_ESCAPES).decode(encoding)
    except LookupError:  # an encoding Python does not know: stdout would have failed first
        return text
    if written == text:  # each character written, and read back as itself: nearly always
        return text
    read_back_otherwise = _read_back_otherwise(encoding)
    if read_back_otherwise is None:
        return written
    text = read_back_otherwise.sub(_escaped_match, text)
    return text.encode(encoding, _JSON_ESCAPES).decode(encoding)


@functools.cache
def _writes_ascii(encoding: str) -> bool:
    """Whether ``encoding`` writes every ASCII character (cp864, an Arabic code page, has no
    '%': its byte 0x25 is the Arabic percent sign)."""
    try:
        _ASCII.encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True


_ASCII = "".join(map(chr, range(128)))


@functools.cache
def _read_back_otherwise(encoding: str) -> re.Pattern[str] | None:
    """The characters ``encoding`` writes as bytes that read back as another character: shift_jis
    and euc_jp write U+00A5 (the yen sign) as a backslash's byte, which ended the JSON string
    or made an invalid escape of it; cp932 reads U+00A2 back as U+FFE0, data changed. (Python's
    codecs have such characters in the first 65,536 alone: a scan of a few milliseconds.)"""
    changed = "".join(
        char for char in map(chr, range(0x80, 0x10000)) if _read_back_as_other(char, encoding)
    )
    return re.compile(f"[{re.escape(changed)}]") if changed else None


def _read_back_as_other(char: str, encoding: str) -> bool:
    try:
        return char.encode(encoding).decode(encoding) != char
    except UnicodeError:  # not written at all (the error handler escapes it), or a surrogate
        return False


def _json_escapes(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler that writes what an encoding lacks as JSON escapes."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    lacking = error.object[error.start : error.end]
    if lacking.encode("ascii", "ignore"):  # ASCII lacking too (cp864's '%'): json.dumps keeps it
        return "".join(map(_json_escape, lacking)), error.end
    return json.dumps(lacking)[1:-1], error.end  # as _json_escape writes them, in C


_JSON_ESCAPES = "tracekit-json-escapes"
codecs.register_error(_JSON_ESCAPES, _json_escapes)


# Objects allocated between two collections of the youngest generation (Python's default: 700).
# Reconstructing and drawing a request allocates objects that live to the end, a few per span:
# at 700 the collector ran 681 times (5 of them full) for a path of 20,000 spans, a fifth of the
# command's CPU; at this, 8 times and never a full one. Cycles are still collected.
_ALLOCATIONS_PER_COLLECTION = 50_000


@contextmanager
def collecting_less_often() -> Iterator[None]:
    """Run the garbage collector less often for a command building a large request (``trace``,
    ``diff``); its output is the same."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], _ALLOCATIONS_PER_COLLECTION), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def emit_text(render: Callable[[int], str], narrowest: int = 40) -> None:
    """Plain text at the terminal width (or 100 columns when piped), at least ``narrowest``."""
    with _stdout_reader_may_leave():
        sys.stdout.write(render(terminal_width(narrowest=narrowest)))


def emit_rich(draw: Callable[[Any], None], narrowest: int = 40) -> None:
    """Rich tables on a console (``search``, ``services``); only for ``--format rich``."""
    from tracekit_cli.render.rich_view import make_console

    # The console draws into a buffer of its own: rich would exit 1 itself on a closed pipe,
    # and even a capture touches its file when it ends (a full disk failed there).
    drawn = io.StringIO()
    width = terminal_width(narrowest=narrowest)
    console = make_console(width, terminal_height(), color=not no_color(), file=drawn)
    draw(console)
    with _stdout_reader_may_leave():
        sys.stdout.write(drawn.getvalue())


def print_and_exit(ctx: click.Context, text: str) -> NoReturn:
    """Write ``--help`` or ``--version`` as every result is written (a reader that left, as in
    ``tracekit --help | head -0``, is let go and the status stays 0; a full disk is one line and
    exit 2), then exit. Click's own callbacks exited 1 for the first, and the second was an
    "internal error"."""
    with _stdout_reader_may_leave():
        click.echo(text, color=ctx.color)
    ctx.exit()


def _show_help(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        print_and_exit(ctx, ctx.get_help())


def help_written(option: click.Option | None) -> click.Option | None:
    """A command's help option (``-h``, ``--help``), its help written by :func:`print_and_exit`."""
    if option is not None:
        option.callback = _show_help
    return option


def examples(*lines: str) -> str:
    """A command's ``--help`` epilog: command lines a newcomer can run as they are (with the
    README's first service, or after ``tracekit demo`` with its IDs), kept unwrapped."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class Command(click.Command):
    """A tracekit command: ``--help`` is output like any other (:func:`print_and_exit`)."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return help_written(super().get_help_option(ctx))


@contextmanager
def _stdout_reader_may_leave() -> Iterator[None]:
    """Write the output, and stop quietly if its reader has gone (``| head -1``): the command
    then exits with its result's status (a canary's verdict), not click's 1 for a closed pipe.
    Output that could not be written (``> file`` on a full disk) is one line and exit 2.

    Python's documented pattern: flush inside the ``try``, so the error is raised here, then point
    stdout at /dev/null, so the interpreter's flush at exit has nowhere to fail.
    """
    try:
        yield
        sys.stdout.flush()
    except OSError as error:
        stop_writing(sys.stdout)
        if not isinstance(error, BrokenPipeError):  # a full disk: the output is lost, say so
            fail_output_lost(error)


class OutputLost(Exception):
    """stdout refused what a command writes as it goes (a full disk); the command stops what it
    started, then says so with :func:`fail_output_lost`."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


def fail_output_lost(error: OSError) -> NoReturn:
    """The one line (exit 2) every command says when its output cannot be written."""
    fail(f"cannot write the output: {error.strerror or error}", EXIT_ERROR)


class StdoutAsWritten:
    """``sys.stdout`` for a console that writes as a long command goes (the demo): a reader that
    leaves is let go quietly, the rest unseen, and output that cannot be written raises
    :class:`OutputLost`, as rich only catches a closed pipe."""

    def write(self, text: str) -> int:
        with _written_or_lost():
            sys.stdout.write(text)
        return len(text)

    def flush(self) -> None:
        with _written_or_lost():
            sys.stdout.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: stdout's own
        return getattr(sys.stdout, name)


@contextmanager
def _written_or_lost() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        stop_writing(sys.stdout)
    except OSError as error:
        stop_writing(sys.stdout)
        raise OutputLost(error) from error
