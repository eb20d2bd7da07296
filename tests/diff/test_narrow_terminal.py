"""The diff views on narrow terminals (down to 20 columns, the narrowest the CLI lays out): notes
wrap between words instead of standing one letter a line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import write_store

from tracekit_cli.main import cli

NOTES = [
    "new error: job failed downstream",  # under the root: 36 columns of indent at 100
    "1 retry after HTTP 503 (A: no retries)",
    "new error: duplicate entry for job 77",  # three levels deeper
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("narrow") / "tracekit.db"
    return write_store(path)


def _diff(
    store: Path, fmt: str, width: str, a: str = "req-checkout-1", b: str = "req-incident-9"
) -> Result:
    """``tracekit diff A B`` on ``store`` at ``width`` columns, in ``fmt``, without colour."""
    return CliRunner().invoke(
        cli,
        ["diff", a, b, "--store", str(store), "--format", fmt],
        env={"COLUMNS": width, "NO_COLOR": "1"},
    )


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_notes_wrap_between_words_at_40_columns(store: Path, fmt: str) -> None:
    result = _diff(store, fmt, "40")

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 40
    words = [line.split() for line in lines]
    assert not [line for line in lines if len(line.strip()) == 1], "a letter a line"
    for note in NOTES:  # every word whole, in order, on lines of more than one word
        first = next(i for i, w in enumerate(words) if w and w[0] == note.split()[0]
                     and note.startswith(" ".join(w)))  # fmt: skip
        taken = []
        for line in words[first:]:
            taken += line
            if len(taken) >= len(note.split()):
                break
        assert " ".join(taken) == note
        assert len(words[first]) >= 3


def test_the_text_view_fits_the_width_with_wide_characters(tmp_path: Path) -> None:
    """Span names and services in Japanese: each character takes two columns. The text view
    counted characters, so at 60 columns its rows and notes ran to 90 and the terminal broke
    the tree over two lines."""

    from tracekit.records import SpanRecord
    from tracekit.store import Store

    start = 1_700_000_000_000_000_000
    spans = []
    for n, (cid, ms) in enumerate((("wide-a", 10), ("wide-b", 90)), start=1):
        ids = {"correlation.id": cid}
        root = SpanRecord(f"{n:032x}", f"{n:016x}", None, "注文サービス注文サービス",
                          "注文を処理する" * 4, "SERVER", start, start + ms * 10**6,
                          attributes=ids)  # fmt: skip
        child = SpanRecord(root.trace_id, f"{n + 8:016x}", root.span_id, "在庫",
                           "在庫を確認する" * 4, "INTERNAL", start, start + (ms - 5) * 10**6,
                           attributes=ids)  # fmt: skip
        spans += [root, child]
    with Store(tmp_path / "wide.db") as store:
        store.write_spans(spans)

    result = CliRunner().invoke(
        cli, ["diff", "wide-a", "wide-b", "--store", str(tmp_path / "wide.db"), "--format", "text"],
        env={"COLUMNS": "60"},
    )  # fmt: skip

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 60
    unwrapped = "".join("".join(lines).split())  # a long word is split over lines, not cut
    assert "timing在庫:" + "在庫を確認する" * 4 + ":selftime5.0ms->85.0ms(+80.0ms)" in unwrapped


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_a_wrapped_note_continues_under_itself(store: Path, fmt: str) -> None:
    """At 72 columns the rich view continued a note under the tree at column 4, beneath the
    A and B columns, where it read as part of another row; the text view indents it under the
    note."""
    result = _diff(store, fmt, "72")

    lines = result.stdout.splitlines()
    notes = (("1 retry after HTTP 503", "retries)"), ("new error: duplicate", "for job"))
    for start, rest in notes:
        at = next(i for i, line in enumerate(lines) if line.lstrip().startswith(start))
        indent = len(lines[at]) - len(lines[at].lstrip())
        assert lines[at + 1].startswith(" " * (indent + 4) + rest), lines[at : at + 2]


def _section(lines: list[str], heading: str) -> list[str]:
    """The words of the section that starts with ``heading``, up to its blank line."""
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return " ".join(lines[start:end]).split()


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_where_the_time_went_and_the_result_are_whole_at_40_columns(store: Path, fmt: str) -> None:
    """They were rows, cut at the width like the tree: at 40 columns the result lost its exit
    status ('result: different (structure, retries, e') and each part of where the time went
    kept four letters of its node ('paym', 'orde'). They wrap now, as at 100 they read."""
    views = {}
    for width in ("100", "40"):
        result = _diff(store, fmt, width)
        assert result.exit_code == 1
        views[width] = result.stdout.splitlines()

    wide, narrow = views["100"], views["40"]
    assert max(len(line) for line in narrow) <= 40
    for heading in ("where the time went", "result:"):
        assert _section(narrow, heading) == _section(wide, heading)
    assert " ".join(_section(narrow, "result:")).endswith("errors): exit 1")
    arrow = "→" if fmt == "rich" else "->"
    assert f"      payments {arrow} bank: POST /charge" in narrow  # under its figures, whole


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_every_node_of_the_tree_is_named_whole_at_40_columns(store: Path, fmt: str) -> None:
    """The figures and the tree's guides take 34 columns and more: at 40 a row kept six
    columns for its node ('gatewa', '`- gat') and a deep one none at all, a duration with no
    name. A node that would keep fewer than 16 columns is named on the line below."""
    result = _diff(store, fmt, "40")

    lines = result.stdout.splitlines()
    arrow = "→" if fmt == "rich" else "->"
    nodes = [
        "gateway: POST /checkout", f"payments {arrow} bank: POST /charge", "web: POST /jobs",
        f"api {arrow} worker: jobs", "ledger: POST /entries",
    ]  # fmt: skip
    for node in nodes:
        at = lines.index(f"    {node}")
        assert re.match(r"^[-+~ ] +(\S+ ms|-) +(\S+ ms|-) +[-+]\S+ ms", lines[at - 1]), node
    assert max(len(line) for line in lines) <= 40


@pytest.mark.parametrize("width", ["50", "60", "72"])
@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_a_node_cut_at_the_edge_says_so(store: Path, fmt: str, width: str) -> None:
    """At 60 columns a node keeping 16 columns and more beside its figures and guides was cut
    silently ('orders -> payments:', 'ledger: POST /ent'): it read as a whole name. A cut node
    now ends in an ellipsis ('...' in the ASCII text view), as `trace` marks its cut names."""
    result = _diff(store, fmt, width)

    lines = result.stdout.splitlines()
    arrow, mark = ("→", "…") if fmt == "rich" else ("->", "...")
    nodes = [
        "gateway: POST /checkout", f"gateway {arrow} orders: POST /orders",
        "orders: INSERT orders", f"orders {arrow} payments: orders.created",
        f"payments {arrow} bank: POST /charge", "web: POST /jobs", f"web {arrow} api: POST /jobs",
        f"api {arrow} worker: jobs", "ledger: POST /entries",
    ]  # fmt: skip
    cut = 0
    for node in nodes:
        key = node[:12]  # the first line naming it is its row, or the line below its row
        drawn = key + next(line.split(key, 1)[1] for line in lines if key in line)
        if drawn != node:
            assert drawn.endswith(mark) and node.startswith(drawn.removesuffix(mark)), drawn
            cut += 1
    assert cut or width == "72"
    assert max(len(line) for line in lines) <= int(width)


def _fan_out(path: Path) -> Path:
    """Two requests of one shape, a root calling two services; in B the first call fails with
    a message long enough to wrap at 72 columns, under a tree row with a sibling below it."""
    from tracekit.records import SpanRecord
    from tracekit.store import Store

    start, ms = 1_700_000_000_000_000_000, 10**6
    spans = []
    for n, cid in enumerate(("fan-a", "fan-b"), start=1):
        ids = {"correlation.id": cid}
        trace = f"{n:032x}"
        root = SpanRecord(trace, f"{n}{0:015x}", None, "gateway", "POST /checkout", "SERVER",
                          start, start + 50 * ms, attributes=ids)  # fmt: skip
        failed = {"status": "ERROR", "status_message": "stock service answered 503 while "
                  "rebuilding its index for warehouse seven"} if cid == "fan-b" else {}  # fmt: skip
        spans.append(root)
        for k, service in enumerate(("stock", "prices"), start=1):
            spans.append(SpanRecord(trace, f"{n}{k:015x}", root.span_id, service, "GET /items",
                                    "SERVER", start + k * ms, start + (k + 20) * ms,
                                    attributes=ids, **(failed if k == 1 else {})))  # fmt: skip
    with Store(path) as store:
        store.write_spans(spans)
    return path


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_a_note_under_a_tree_row_wraps_with_the_trees_guide(tmp_path: Path, fmt: str) -> None:
    """At 80 columns, `tracekit demo`'s own diff wrapped the notes of a node with a sibling
    below it onto lines of spaces: the tree's line down to the sibling broke at each wrap. Its
    continuation lines go on with the guide."""
    store = _fan_out(tmp_path / "fan.db")
    result = _diff(store, fmt, "72", "fan-a", "fan-b")

    lines = result.stdout.splitlines()
    guide = "|" if fmt == "text" else "│"
    at = next(i for i, line in enumerate(lines) if "new error: stock service" in line)
    column = lines[at].index(guide)
    below = lines[at + 1 : next(i for i in range(at, len(lines)) if "prices" in lines[i])]
    assert below, lines[at:]  # the note wrapped
    assert all(line[column] == guide for line in below), lines[at - 1 : at + len(below) + 2]
    words = " ".join(line[column + 1 :] for line in [lines[at], *below]).split()
    assert " ".join(words) == ("new error: stock service answered 503 while rebuilding its index"
                               " for warehouse seven")  # fmt: skip


@pytest.mark.parametrize("width", ["30", "20"])
@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_under_40_columns_each_node_is_named_then_its_figures_in_words(
    store: Path, fmt: str, width: str
) -> None:
    """Under 40 columns the view was drawn for 40 all the same: the terminal broke each of
    its lines in two (`trace`, `search` and `services` lay out down to 20). Drawn for the
    width, the 34 columns of figures were cut ('-  120.0 ms         -  -12'), their heading
    read 'A' alone. Now each node is named whole, then its A, B and delta in words, wrapped
    between words; the result line keeps its exit status."""
    result = _diff(store, fmt, width)

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= int(width)
    assert not [line for line in lines if line.split()[:2] == ["A", "B"]]  # the heading
    text = " ".join(" ".join(lines).split())
    arrow = "→" if fmt == "rich" else "->"
    for node, figures in [
        ("gateway: POST /checkout", "A 120.0 ms, B -, delta -120.0 ms"),
        (f"payments {arrow} bank: POST /charge", "A 110.0 ms, B -, delta -110.0 ms"),
        (f"web {arrow} api: POST /jobs", "A -, B 70.0 ms, delta +70.0 ms"),
        ("ledger: POST /entries", "A -, B 60.0 ms, delta +60.0 ms"),
    ]:
        marker = "+" if figures.startswith("A -") else "-"
        assert f"{marker} {node} {figures}" in text
    assert text.endswith("exit 1")
