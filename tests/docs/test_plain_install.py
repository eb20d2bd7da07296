"""A plain ``pip install tracekit`` (no extras) in a fresh venv: the library works, and the
``tracekit`` command says how to get the CLI instead of failing on an import (issue #19)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from venvs import make_venv


@pytest.mark.slow
def test_plain_install_library_works_and_the_command_names_the_cli_extra(
    tmp_path: Path, tracekit_wheel: Path
) -> None:
    bin_dir = make_venv(tmp_path / "venv", str(tracekit_wheel))
    imported = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import tracekit, tracekit.asgi, tracekit.wsgi, sys; tracekit.init('svc', exporter='none',"
         " metrics_port=0); print(sorted(m for m in ('click', 'rich') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "[]\n"

    for args in ([], ["trace", "x"], ["--help"]):
        result = subprocess.run(
            [str(bin_dir / "tracekit"), *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr == (
            "tracekit: the tracekit command needs the cli extra (click, rich missing):"
            " pip install 'tracekit[cli]'\n"
        )
