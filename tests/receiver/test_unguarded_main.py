"""A script that starts a Receiver without an ``if __name__ == "__main__":`` guard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from loopback import free_port

# What docs/store.md warns against: the writer process (multiprocessing's spawn) runs the
# script's top level again as it starts.
UNGUARDED = """\
import sys
from pathlib import Path

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

receiver = Receiver(Store(Path(sys.argv[1])), ReceiverConfig(port=int(sys.argv[2]))).start()
print("ready:", receiver.wait_ready(), "start failure:", receiver.start_failure)
receiver.stop()
"""


@pytest.mark.parametrize("port", ["0", "free"])
def test_an_unguarded_script_is_told_in_one_line_what_to_do(port: str, tmp_path: Path) -> None:
    """Its writer process failed with multiprocessing's 40-line RuntimeError ("An attempt has
    been made to start a new process before the current process has finished its bootstrapping
    phase"), or, on a fixed port (4318 by default), with an "Address already in use" traceback
    that points nowhere near the cause. Now it says in one line what to do, and ``wait_ready()``
    returns False as soon as the writer has ended (it waited its whole timeout, here for ever)."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    chosen = str(free_port()) if port == "free" else port
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "t.db"), chosen],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.stderr == (
        "tracekit: a Receiver is created as the main module is imported, which the writer"
        " process it starts imports again (multiprocessing's spawn): create and start it under"
        ' `if __name__ == "__main__":`\n'
    )
    assert result.returncode == 0
    assert result.stdout == (
        "ready: False start failure: it ended (exit status 1) before it opened the store\n"
    )
