"""What a remote backend wants its reader to know, besides the spans it returned.

Two kinds: a *notice* about the backend as a whole (it searches a shorter window than asked, it
ignores a filter so tracekit filters client-side), said once through a callback -- the CLI prints
it on stderr; and a *warning* about one trace (Tempo returned it partially, a link search from it
failed), which ends up in that request's path (``Path.warnings``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

Notify = Callable[[str], None]

_log = logging.getLogger("tracekit.backends")


class Notes:
    """Once-per-source notices and per-trace warnings."""

    def __init__(self, notify: Notify | None = None) -> None:
        self._notify = notify or _log.warning
        self._said: set[str] = set()
        self._by_trace: dict[str, list[str]] = {}
        self._lock = threading.Lock()  # traces are read several at once (``_read_ahead``)

    def once(self, message: str, key: str | None = None) -> None:
        """Tell the reader ``message`` unless it (or another message under ``key``: one whose
        wording changes from call to call, such as a time) was told already."""
        said = message if key is None else key
        with self._lock:
            new = said not in self._said
            self._said.add(said)
        if new:
            self._notify(message)

    def warn(self, trace_id: str, message: str) -> None:
        """Remember a warning that belongs to the path of any request containing ``trace_id``."""
        with self._lock:
            kept = self._by_trace.setdefault(trace_id, [])
            if message not in kept:
                kept.append(message)

    def warnings_for(self, trace_ids: Iterable[str]) -> list[str]:
        """The warnings about these traces, each once, in the order the traces are given."""
        found = [m for t in trace_ids for m in self._by_trace.get(t, [])]
        return list(dict.fromkeys(found))
