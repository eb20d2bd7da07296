"""Where the embedded store lives when nobody says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

STORE_ENV = "TRACEKIT_STORE"


def default_store_path() -> Path:
    """``$TRACEKIT_STORE``, else ``$XDG_DATA_HOME/tracekit/tracekit.db``, else under ``~/.local``.

    The CLI's ``--store`` and ``TRACEKIT_EXPORTER=store`` both default to this path, so a demo that
    writes and a ``tracekit trace`` that reads meet without flags.
    """
    explicit = os.environ.get(STORE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(data_home) if data_home and os.path.isabs(data_home) else None
    if base is None:
        base = Path.home() / ".local" / "share"
    return base / "tracekit" / "tracekit.db"
