"""The lowest versions ``pyproject.toml`` allows are a promise as much as the pinned ones: pip
installs tracekit beside them without a word. CI tests the pins of ``constraints.txt`` (the
newest), so here a fresh venv gets every core dependency at its floor, and a service in it
starts, traces and logs into a collector that runs there too."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from venvs import ROOT, make_venv

_FLOOR = re.compile(r"^([A-Za-z0-9._-]+)>=([0-9][0-9.]*)$")

# A service exporting over OTLP/HTTP to tracekit's own receiver, all in one process.
_SERVICE = """
import logging, os, sys
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store
import tracekit
from opentelemetry import trace

path = sys.argv[1]
receiver = Receiver(Store(path), ReceiverConfig(port=0, writer_process=False))
receiver.start()
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
os.environ["OTEL_PROPAGATORS"] = "tracecontext,baggage,b3,jaeger,xray"  # each package loads
tracekit.init("checkout", metrics_port=0)
with trace.get_tracer("floors").start_as_current_span("charge"):
    logging.getLogger("payments").warning("card declined")
tracekit.shutdown()
receiver.stop()
reader = Store(path)
print(reader.count_spans(), reader.count_logs())
"""


def core_floors() -> list[str]:
    """``name==floor`` for every dependency of a plain ``pip install tracekit``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = _FLOOR.match(requirement.replace(" ", ""))
        assert match, f"pyproject.toml: {requirement!r} names no floor (name>=version)"
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


@pytest.mark.slow
def test_a_service_works_with_every_core_dependency_at_its_floor(
    tmp_path: Path, tracekit_wheel: Path
) -> None:
    bin_dir = make_venv(tmp_path / "venv", str(tracekit_wheel), *core_floors())
    result = subprocess.run(
        [str(bin_dir / "python"), "-c", _SERVICE, str(tmp_path / "store.db")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tracekit:" not in result.stderr, result.stderr[-3000:]
    assert result.stdout == "1 1\n"
