"""Running a command without root's power to read and write any file."""

from __future__ import annotations

import os
import shutil

from conditions import need


def as_an_ordinary_user() -> list[str]:
    """A command prefix that takes root's power to write any file away (nothing for others)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    need(setpriv is not None, "setpriv (util-linux), to run without root's DAC override")
    assert setpriv is not None
    drop = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--bounding-set={drop}", "--inh-caps=-all"]
