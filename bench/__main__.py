"""``python -m bench``: run every benchmark module in ``bench/``, each in a fresh interpreter.

Every module whose name does not start with ``_`` is a benchmark (``_name.py`` are helpers).

A fresh interpreter per module keeps one benchmark's global state (OpenTelemetry's one tracer
provider per process, imported libraries, garbage) from skewing the next one. Arguments after
``python -m bench`` are passed to every module (for example ``--quick``); ``--only NAME`` runs the
modules whose name contains NAME.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def discover(directory: Path = BENCH_DIR) -> list[str]:
    """Module names (``bench.x``) of every benchmark in ``directory``, sorted; helpers skipped."""
    paths = sorted(directory.glob("*.py"))
    return [f"bench.{path.stem}" for path in paths if not path.stem.startswith("_")]


def split_only(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--only NAME`` out of ``argv``; the rest is passed on to the modules."""
    if "--only" not in argv:
        return None, argv
    at = argv.index("--only")
    if at + 1 >= len(argv):
        raise SystemExit("--only needs a module name")
    return argv[at + 1], argv[:at] + argv[at + 2 :]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks one after another; the exit status is the worst of theirs."""
    only, passed = split_only(list(sys.argv[1:] if argv is None else argv))
    modules = [m for m in discover() if only is None or only in m]
    if not modules:
        print("no benchmark modules found", file=sys.stderr)
        return 1
    worst = 0
    for module in modules:
        print(f"\n== {module} ==", flush=True)
        status = subprocess.call([sys.executable, "-m", module, *passed], cwd=BENCH_DIR.parent)
        worst = max(worst, status)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
