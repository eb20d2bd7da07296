"""Fresh virtual environments with tracekit installed from this checkout, as a user's would be.

pip reaches PyPI (or its cache) for the dependencies; tracekit itself is built from the
checkout, since it is what these tests are about. The venv is made without pip, and this
interpreter's pip installs into it (``pip --python``): what a venv's own pip would install,
without the 3-9 s ``ensurepip`` takes to put pip in each new venv.

tracekit's wheel is built once per test session (``built_wheel``): installing the checkout's
folder had pip build it again for each venv, about 10 s each time, where a user installs the
wheel a registry serves.
"""

from __future__ import annotations

import fcntl
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


def built_wheel(shared: Path) -> Path:
    """tracekit's wheel, built from the checkout into ``shared`` by the first test process to
    ask; the others (pytest-xdist's, sharing the folder) wait for it and use the same file."""
    wheels = shared / "tracekit-wheel"
    wheels.mkdir(exist_ok=True)
    with open(wheels / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(wheels.glob("tracekit-*.whl")):
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                 "--disable-pip-version-check", "--wheel-dir", str(wheels), str(ROOT)],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheels.glob("tracekit-*.whl")
    return wheel
