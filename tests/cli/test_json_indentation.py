"""``--format json`` is indented exactly as ``json.dumps(indent=2)`` writes it, and written
without the standard library's indenting encoder, which runs in Python (a request of 20,000 spans
took 5.6 s as JSON, 2.8 s as text)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tracekit.records import SpanRecord, finite_json
from tracekit.store import Store
from tracekit_cli.main import cli
from tracekit_cli.output import json_pieces

T0 = 1_700_000_000_000_000_000


def _indented(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def test_trace_json_is_indented_as_json_dumps_without_its_python_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = "ab" * 16
    spans = [SpanRecord(trace, f"{n + 1:016x}", f"{n:016x}" if n else None, f"svc-{n % 3}",
                        f"GET /é/{n}", "SERVER", T0 + n * 1000, T0 + 10**6 - n * 1000,
                        attributes={"correlation.id": "req-indent", "tags": ["a", "日本"],
                                    "retries": n, "ratio": n / 3, "empty": []})
             for n in range(50)]  # fmt: skip
    with Store(tmp_path / "tracekit.db") as store:
        store.write_spans(spans)

    def python_encoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("the indenting encoder of the standard library ran")

    monkeypatch.setattr(json.encoder, "_make_iterencode", python_encoder)
    args = ["trace", "req-indent", "--store", str(tmp_path / "tracekit.db"), "--format", "json"]
    result = CliRunner().invoke(cli, args)

    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert len(document["spans"]) == 50
    assert result.output == _indented(document) + "\n"


def _document(rng: random.Random, depth: int = 0) -> Any:
    """A JSON document of every shape: scalars of each type, empty and nested containers, keys
    that JSON converts (numbers, booleans, null), tuples, strings with quotes and brackets."""
    kind = rng.random()
    if depth > 4 or kind < 0.4:
        return rng.choice([0, -7, 10**30, 1.5, 1e300, -0.0, True, False, None, "", "é 日本",
                           'a "quoted" [string], {x}: y', "line\nbreak\ttab\x01"])  # fmt: skip
    size = rng.randint(0, 5)
    if kind < 0.6:
        return [_document(rng, depth + 1) for _ in range(size)]
    if kind < 0.7:
        return tuple(_document(rng, depth + 1) for _ in range(size))
    keys = ["k", "", "é", 'a"b', "[x]", 1, 2.5, True, None]
    return {rng.choice(keys): _document(rng, depth + 1) for _ in range(size)}


def test_json_of_any_shape_is_as_json_dumps_writes_it() -> None:
    rng = random.Random(7)
    for _ in range(3_000):
        document = _document(rng)
        assert "".join(json_pieces(document)) == _indented(document)


def test_nan_and_infinities_are_written_as_strings_in_the_same_indentation() -> None:
    document = {"spans": [{"attributes": {"a": float("nan"), "b": [float("-inf"), 1]}}], "n": 1}
    assert "".join(json_pieces(document)) == _indented(finite_json(document))
    assert json.loads("".join(json_pieces(document)))["spans"][0]["attributes"]["a"] == "NaN"
