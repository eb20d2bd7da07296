"""`--format json` is safe to print: no character a terminal could act on leaves tracekit raw.

Span names, services and attributes come from any process that can reach the collector. JSON
already escapes C0 controls; C1 controls (U+009B is CSI, U+009D is OSC on terminals that read
them in UTF-8), DEL, bidirectional overrides and the Unicode line separators are escaped too, so
the output is still valid JSON that decodes to exactly what was stored, and other non-ASCII text
stays readable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import Topology

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

SINCE = "2023-11-14T22:00:00+00:00"
HOSTILE = "\x7f\x80\x9b31m\x9d0;title\x07\x9f\u200e\u200f\u202a\u202e\u2066\u2069\u2028\u2029"
# Invisible: "ord\u200bers" reads as "orders"; tag characters can carry hidden ASCII text.
INVISIBLE = "\u200b\u2060\ufeff\u00ad\U000e0041\U000e0042"
# printable to Python, drawn as nothing: Hangul fillers, variation selectors, the combining
# grapheme joiner
DRAWING_NOTHING = ["\u3164", "\ufe0f", "\u034f", "\U000e0100", "\uffa0"]
UNSAFE = (
    {chr(c) for c in range(0x7F, 0xA0)}
    | set("\u200e\u200f\u2028\u2029")
    | {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
    | set(INVISIBLE)
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    t = Topology("req-hostile")
    root = t.span(f"gate{HOSTILE}way", f"GET /é{HOSTILE}", "SERVER", 0, 100,
                  attrs={"note": f"日本{HOSTILE}"})  # fmt: skip
    t.http(root, f"orders{HOSTILE}", "/orders", 10, 90)
    t.http(root, f"ord{INVISIBLE}ers", "/stock", 20, 30)
    path = tmp_path_factory.mktemp("hostile") / "tracekit.db"
    with Store(path) as s:
        s.write_spans(t.spans)
    return path


def strings(value: object) -> list[str]:
    """Every string in a decoded JSON document, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (k, *strings(v))]
    if isinstance(value, list):
        return [t for item in value for t in strings(item)]
    return []


@pytest.mark.parametrize(
    ("args", "names_services"),
    [
        (["trace", "req-hostile"], True),
        (["search", "--since", SINCE], False),  # a list of requests, by correlation id
        (["services", "--since", SINCE], True),
    ],
)
def test_json_escapes_what_a_terminal_could_act_on(
    store: Path, args: list[str], names_services: bool
) -> None:
    result = CliRunner().invoke(cli, [*args, "--store", str(store), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert HOSTILE not in out
    assert not UNSAFE & set(out), sorted(f"U+{ord(c):04X}" for c in UNSAFE & set(out))
    assert "\\u009b" in out and "\\u202e" in out and "\\u2028" in out
    if names_services:  # beyond the BMP, as JSON writes it: a surrogate pair
        assert "\\u200b\\u2060\\ufeff\\u00ad\\udb40\\udc41" in out
    # nothing lost: the document decodes to the stored strings; other text stays readable
    decoded = strings(json.loads(out))
    assert any(HOSTILE in text for text in decoded)
    assert any(INVISIBLE in text for text in decoded) is names_services
    assert "\\u00e9" not in out and "\\u65e5" not in out


def test_json_escapes_the_letters_and_marks_that_draw_nothing(tmp_path: Path) -> None:
    """A Hangul filler, a variation selector, the combining grapheme joiner: printable to
    Python, nothing on a terminal, so "orders\u3164" left raw read "orders" in a script's
    output (``jq -r .services[]``). They are escaped as the invisible format characters are;
    a Japanese name and an emoji keep their text, an emoji's variation selector (its picture)
    too."""
    t = Topology("req-fillers")
    root = t.span("gateway", "GET /❤", "SERVER", 0, 100)
    for number, tail in enumerate(DRAWING_NOTHING):
        t.http(root, f"orders{tail}", f"/stock/{number}", 10, 90)
    t.http(root, "注文", "/注文", 10, 90)
    t.http(root, "likes\u2764\ufe0f", "/likes", 10, 90)  # an emoji's picture: drawn, kept
    path = tmp_path / "fillers.db"
    with Store(path) as s:
        s.write_spans(t.spans)
    args = ["trace", "req-fillers", "--store", str(path), "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.isascii() is False and "注文" in result.stdout and "\u2764" in result.stdout
    )
    document = json.loads(result.stdout)
    assert sorted(document["services"]) == sorted(
        ["gateway", "注文", "likes\u2764\ufe0f", *(f"orders{t}" for t in DRAWING_NOTHING)]
    )
    assert '"likes\u2764\ufe0f"' in result.stdout
    for escaped in ["\\u3164", "\\ufe0f", "\\u034f", "\\udb40\\udd00", "\\uffa0"]:
        assert f'"orders{escaped}"' in result.stdout


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_json_of_a_request_named_in_cjk_is_written_without_a_piece_per_character(
    tmp_path: Path, encoding: str
) -> None:
    """500 spans whose names, messages and attributes are Japanese text (a 12.6 MB document):
    each of its 3.6 million characters beyond ASCII was escaped, or not, by a call of its own,
    and ``tracekit trace --format json`` peaked at 400 MiB (2,000 such spans: 2 GB and 10 s).
    A string is now looked at whole: 75 MiB, the same output. Under an ascii stdout (where
    each is written as its \\u escape) a call per character peaked at 368 MiB; now 109 MiB."""
    text = "日本語の名前" * 171  # 1,026 characters: cut to the store's 1,024 for a name
    t = Topology("req-cjk")
    root = t.span("gateway", text, "SERVER", 0, 100, attrs={"note": text})
    for _ in range(499):
        t.span("orders", text, "INTERNAL", 1, 99, root, status="ERROR", message=text * 4,
               attrs={"note": text, "detail": text})  # fmt: skip
    path = tmp_path / "tracekit.db"
    with Store(path) as s:
        s.write_spans(t.spans)
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    command = [tracekit, "trace", "req-cjk", "--store", str(path), "--format", "json"]
    with (tmp_path / "out.json").open("w+b") as out:
        env = {**os.environ, "PYTHONIOENCODING": encoding}
        process = subprocess.run(
            [sys.executable, "-c", _PEAK_OF, *command],
            stdout=out, stderr=subprocess.PIPE, env=env, timeout=120, check=False,
        )  # fmt: skip
        out.seek(0)
        document = json.loads(out.read())

    assert process.returncode == 0, process.stderr
    assert len(document["spans"]) == 500 and document["spans"][1]["name"] == text[:1024]
    peak_mib = int(process.stderr.splitlines()[-1]) / 1024
    assert peak_mib < 200, f"{peak_mib:.0f} MiB"


# Runs argv and writes its peak memory (KiB) last on stderr. The command's own peak needs a
# small parent: a child's ru_maxrss also counts what the process it was forked from held before
# the exec (a test worker late in a run: 569 MiB, whatever the command used).
_PEAK_OF = """\
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("encoding", ["shift_jis", "euc_jp", "cp932"])
def test_json_under_a_stdout_that_reads_a_character_back_as_another_decodes_to_the_data(
    tmp_path: Path, encoding: str
) -> None:
    """shift_jis and euc_jp write the yen sign as a backslash's byte: a span named "price ¥"
    ended its JSON string early (invalid JSON), "¥n" read back as a newline. cp932 reads the cent
    sign back as U+FFE0. Such characters are written as their escapes, as unwritable ones are."""
    name = 'price ¥", ¥n ¥ ¢ £ ¬ ‾ 日本'
    t = Topology("req-yen")
    t.span("gateway", name, "SERVER", 0, 100, attrs={"note": f"{name}¥"})
    path = tmp_path / "tracekit.db"
    with Store(path) as s:
        s.write_spans(t.spans)
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    command = [tracekit, "trace", "req-yen", "--store", str(path), "--format", "json"]
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    result = subprocess.run(command, capture_output=True, env=env, check=False)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout.decode(encoding))
    assert document["spans"][0]["name"] == name
    assert f"{name}¥" in strings(document["spans"][0])
    assert "日本" in result.stdout.decode(encoding)  # what the encoding writes stays readable


@pytest.mark.parametrize(
    "name", ["GET /stock 100%", "GET /stock 100% é ☕"], ids=["ascii", "mixed"]
)
@pytest.mark.parametrize("command", ["trace", "diff"])
def test_json_under_a_stdout_without_an_ascii_character_decodes_to_the_data(
    tmp_path: Path, name: str, command: str
) -> None:
    """cp864 (an Arabic code page) has no '%'. A span name holding one beside a character beyond
    ASCII ended `trace --format json` with "internal error (UnicodeEncodeError: 'charmap' codec
    can't encode character '\\x25' ...)", exit 2; in an ASCII name the '%' was printed as '?', a
    name that is not the span's. It is written as its escape, as other lacking characters are."""
    t = Topology("req-percent")
    t.span("gateway", name, "SERVER", 0, 100, attrs={"note": name})
    path = tmp_path / "tracekit.db"
    with Store(path) as s:
        s.write_spans(t.spans)
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    requests = ["req-percent"] * (2 if command == "diff" else 1)
    argv = [tracekit, command, *requests, "--store", str(path), "--format", "json"]
    env = {**os.environ, "PYTHONIOENCODING": "cp864"}
    result = subprocess.run(argv, capture_output=True, env=env, check=False)

    assert (result.returncode, result.stderr) == (0, b"")
    document = json.loads(result.stdout.decode("cp864"))
    assert name in strings(document)
    assert "\\u0025" in result.stdout.decode("cp864")


def _peak_kib(tmp_path: Path, *command: str) -> tuple[int, bytes]:
    """Peak memory (KiB) of ``tracekit COMMAND``, and what it wrote on stdout."""
    tracekit = str(Path(sys.executable).with_name("tracekit"))
    with (tmp_path / "out").open("w+b") as out:
        process = subprocess.run(
            [sys.executable, "-c", _PEAK_OF, tracekit, *command],
            stdout=out, stderr=subprocess.PIPE, text=True, timeout=300, check=False,
        )  # fmt: skip
        out.seek(0)
        written = out.read()
    assert process.returncode == 0, process.stderr
    return int(process.stderr.splitlines()[-1]), written


def test_json_of_a_large_request_takes_little_more_memory_than_its_text(tmp_path: Path) -> None:
    """A request of 20,000 spans (a batch job's queries): ``json.dumps(indent=2)`` held every
    piece of the document (each key, value and separator) as a string of its own before joining
    them, and ``trace --format json`` of 50,000 such spans peaked at 467 MB where
    ``--format text`` took 153 MB (a 38 MB document); now 182 MB, the same output."""
    start, trace = 1_700_000_000 * 10**9, "ab" * 16
    spans = [SpanRecord(trace, f"{n + 1:016x}", f"{n // 2:016x}" if n else None, "worker",
                        f"SELECT item {n % 100}", "CLIENT" if n else "SERVER", start + n * 1000,
                        start + n * 1000 + 500, attributes={"correlation.id": "req-big",
                        "db.statement": "SELECT * FROM items WHERE id = $1"})
             for n in range(20_000)]  # fmt: skip
    path = tmp_path / "tracekit.db"
    with Store(path) as s:
        s.write_spans(spans)

    command = ("trace", "req-big", "--store", str(path), "--max-spans", "20000", "--format")
    text_kib, _ = _peak_kib(tmp_path, *command, "text")
    json_kib, written = _peak_kib(tmp_path, *command, "json")

    assert len(json.loads(written)["spans"]) == 20_000
    extra_mib, document_mib = (json_kib - text_kib) / 1024, len(written) / 2**20
    assert extra_mib < 2 * document_mib, f"{extra_mib:.0f} MiB more for {document_mib:.0f} MiB"
