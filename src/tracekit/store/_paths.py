"""Where the embedded store lives when nobody says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

STORE_ENV = "TRACEKIT_STORE"


class NoStorePathError(RuntimeError):
    """No store path was given and there is no home directory to keep the default one in."""


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
        try:
            base = Path.home() / ".local" / "share"
        except RuntimeError:  # no $HOME and no passwd entry (a container's arbitrary uid)
            raise NoStorePathError(
                "no home directory for the default store path: set TRACEKIT_STORE"
            ) from None
    return base / "tracekit" / "tracekit.db"
