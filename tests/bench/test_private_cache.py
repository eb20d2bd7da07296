"""The benchmarks keep built stores and bytecode between runs: never where another user could
have put them first.

Under the shared temporary folder (``/tmp``) a predictable name can be taken by anyone: a
bytecode cache there is code the benchmark's next command runs as whoever runs it.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from bench._report import private_cache

from bench import canary_bench, trace_startup


def _plant(prefix: Path, source: str, marker: Path) -> None:
    """What another user can leave under ``prefix``: valid bytecode for ``source`` that also
    writes ``marker`` (the header holds the source's mtime and size, which anyone may read)."""
    cached = Path(importlib.util.cache_from_source(source)).name
    target = prefix / Path(source).parent.relative_to("/") / cached
    target.parent.mkdir(parents=True)
    text = Path(source).read_text() + f"\nopen({str(marker)!r}, 'w').close()\n"
    status = os.stat(source)
    header = struct.pack("<III", 0, int(status.st_mtime) & 0xFFFFFFFF, status.st_size & 0xFFFFFFFF)
    code = marshal.dumps(compile(text, source, "exec"))
    target.write_bytes(importlib.util.MAGIC_NUMBER + header + code)
    for folder in [prefix, *prefix.rglob("*")]:
        folder.chmod(0o777 if folder.is_dir() else 0o666)


def test_bytecode_left_in_the_shared_temporary_folder_does_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    marker = tmp_path / "planted-code-ran"
    source = os.path.realpath(click.__file__)
    for taken in ("tracekit-bench-pycache", "tk-pycache"):  # the names the benchmarks used
        _plant(shared / taken, source, marker)
    for env in (trace_startup.child_env(), canary_bench.child_env()):
        subprocess.run([sys.executable, "-c", "import click"], env=env, check=True)
        assert not marker.exists()
        assert Path(env["PYTHONPYCACHEPREFIX"]).parent == tmp_path / "cache" / "tracekit-bench"


def test_the_cache_folder_is_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = private_cache("tracekit-bench-100000-v2.db")
    assert store == tmp_path / "cache" / "tracekit-bench" / "tracekit-bench-100000-v2.db"
    assert store.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("how", ["writable by others", "a symlink"])
def test_a_cache_folder_someone_else_could_fill_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """XDG_CACHE_HOME pointed at a shared place, where the folder was already there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "tracekit-bench"
    if how == "a symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        folder.symlink_to(elsewhere)
    else:
        folder.mkdir()
        folder.chmod(0o777)
    with pytest.raises(SystemExit, match="no one else may write"):
        private_cache("pycache")
