"""tracekit.canary as a library, installed without the ``canary`` extra."""

from __future__ import annotations

import subprocess
import sys


def test_importing_canary_without_numpy_names_the_extra() -> None:
    """``pip install tracekit`` then ``import tracekit.canary``: the error says what to install."""
    script = (
        "import sys; sys.modules['numpy'] = None\n"  # what a missing package looks like
        "try:\n"
        "    import tracekit.canary\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    assert finished.stdout == "tracekit.canary needs numpy: pip install 'tracekit[canary]'\n"
    assert finished.stderr == ""
