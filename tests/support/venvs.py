"""Fresh virtual environments with tracekit installed from this checkout, as a user's would be.

pip reaches PyPI (or its cache) for the dependencies; tracekit itself is built from the
checkout, since it is what these tests are about. The venv is made without pip, and this
interpreter's pip installs into it (``pip --python``): what a venv's own pip would install,
without the 3-9 s ``ensurepip`` takes to put pip in each new venv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_venv(where: Path, *requirements: str) -> Path:
    """A new venv at ``where`` with ``requirements`` installed; returns its bin directory."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120
    )
    bin_dir = where / "bin"
    if requirements:
        pip_install(bin_dir, *requirements)
    return bin_dir


def pip_install(bin_dir: Path, *requirements: str) -> None:
    """``pip install`` into the venv of ``bin_dir``; fail with pip's own words."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--quiet",
         "--disable-pip-version-check", *requirements],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
