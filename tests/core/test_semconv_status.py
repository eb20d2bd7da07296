"""tracekit does not call the messaging conventions stable: upstream they are in Development.

OpenTelemetry's HTTP semantic conventions are stable; the messaging ones are still marked
Development, and their names have changed between releases. The module users import the names
from, the README and the architecture document say so, not the opposite.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tracekit.semconv

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "semconv.py": Path(tracekit.semconv.__file__).read_text(encoding="utf-8"),
    "README.md": (ROOT / "README.md").read_text(encoding="utf-8"),
    "docs/architecture.md": (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"),
}


def sentences(text: str) -> list[str]:
    return [" ".join(s.split()) for s in re.split(r"(?<=[.;])\s|\n\s*\n|\n#", text)]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_messaging_conventions_are_not_called_stable(name: str) -> None:
    claims = [
        s for s in sentences(SOURCES[name])
        if re.search(r"\bstable (OpenTelemetry )?semantic conventions", s, re.IGNORECASE)
        or ("messaging" in s.lower() and re.search(r"\bstable\b", s) and "Development" not in s)
    ]  # fmt: skip
    assert claims == []


def test_semconv_says_where_messaging_stands() -> None:
    doc = tracekit.semconv.__doc__ or ""
    assert "messaging conventions are still in Development" in " ".join(doc.split())
