"""The diff views at 40 columns, the narrowest width the CLI lays out: notes under a deep tree
wrap between words instead of standing one letter a line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

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


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_notes_wrap_between_words_at_40_columns(store: Path, fmt: str) -> None:
    result = CliRunner().invoke(
        cli, ["diff", "req-checkout-1", "req-incident-9", "--store", str(store), "--format", fmt],
        env={"COLUMNS": "40", "NO_COLOR": "1"},
    )  # fmt: skip

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
