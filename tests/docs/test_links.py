"""Every relative link in the Markdown docs leads to a file, and its #anchor to a heading."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pages(root: Path) -> list[Path]:
    """The checkout's own pages: the README, docs/ and each top folder's README, as git tracks
    them. A tool's folder (``.pytest_cache/README.md``, written by the first run) is no page."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "README.md", ":(glob)docs/**/*.md", ":(glob)*/README.md"],
        cwd=root, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return sorted(root / name for name in listed.stdout.split("\0") if name)


PAGES = pages(ROOT)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*```.*?^\s*```", re.M | re.S)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The page's heading anchors, and "" (a link without one)."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {"", *(slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#"))}


def links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


def test_only_tracked_pages_are_checked(tmp_path: Path) -> None:
    tracked = ["README.md", "dashboards/README.md", "docs/a.md", "docs/queues/b.md"]
    untracked = [".pytest_cache/README.md", "docs/draft.md"]
    for name in [*tracked, "tests/support/README.md", *untracked]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# a page\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "add", "--", *tracked, "tests/support/README.md"], cwd=tmp_path, check=True
    )
    assert [str(page.relative_to(tmp_path)) for page in pages(tmp_path)] == tracked


def test_pages_have_relative_links() -> None:
    assert sum(len(links(page)) for page in PAGES) >= 25


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"
