"""The project's environments install exactly what ``constraints.txt`` pins (see
docs/architecture.md): a dependency added to ``pyproject.toml`` without a pin would otherwise
follow every upstream release into CI, as wrapt 2 once did."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
# Installed by the venv itself, not by the project's requirements.
_TOOLING = {"pip", "setuptools", "wheel", "tracekit"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _PIN.match(line.strip())
        assert match, f"constraints.txt: not a 'name==version' pin: {line!r}"
        pins[_canonical(match.group(1))] = match.group(2)
    return pins


def test_every_installed_distribution_is_pinned_at_its_version() -> None:
    pins = _pins()
    installed = {
        _canonical(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if _canonical(dist.metadata["Name"]) not in _TOOLING
    }
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    moved = {
        name: (pins[name], version) for name, version in installed.items() if pins[name] != version
    }
    assert not moved, f"installed versions differ from constraints.txt (pin, installed): {moved}"
