"""The histogram series a multiprocess server's workers have recorded, read for the label caps.

A cap on a label's values (``tracekit.metrics.BoundedLabel``) counts in one process, while the
series of exited workers stay in ``PROMETHEUS_MULTIPROC_DIR``: a worker counts those first, or
each one gunicorn's ``--max-requests`` recycles would admit a whole cap of new values again.

Every capped family is a histogram, which prometheus-client keeps in ``histogram_<pid>.db``, and
each of its series has a ``_sum`` key there: only those files are read, and of them only the keys,
each distinct key parsed once. Merging every file as a scrape does (the values summed, each file
read twice to leave out unreadable ones) took each worker seconds as it booted once the directory
held a few thousand exited workers' files, which recycling workers leave behind.
"""

from __future__ import annotations

import glob
import json
import os

from prometheus_client.mmap_dict import MmapedDict

from tracekit._metrics.fold import reading
from tracekit._runtime.guard import report_once

__all__ = ["RecordedSeries", "recorded_series"]

# (family, labels) of one series
RecordedSeries = list[tuple[str, dict[str, str]]]


def recorded_series(directory: str) -> RecordedSeries:
    """The ``(family, labels)`` of every histogram series in ``directory``'s files, each once.
    A file that cannot be read (a worker killed as it made it, another program's) is left out,
    said once."""
    seen: set[str] = set()
    series: RecordedSeries = []
    with reading(directory):  # (not as a fold replaces files)
        for path in glob.glob(os.path.join(glob.escape(directory), "histogram_*.db")):
            try:
                _add_series_of(path, seen, series)
            except Exception as error:
                report_once(f"reading metrics file {os.path.basename(path)!r}", error)
    return series


def _add_series_of(path: str, seen: set[str], series: RecordedSeries) -> None:
    """Add to ``series`` those of the file at ``path`` whose keys are not in ``seen``."""
    entries = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
    for key, _value, _timestamp, _position in entries:
        if key in seen:  # the usual case: every worker records the same few series
            continue
        family, name, labels, _help = json.loads(key)
        seen.add(key)
        if name == f"{family}_sum" and _all_text(labels):
            series.append((family, labels))


def _all_text(labels: object) -> bool:
    """Whether ``labels`` is a dict of text, as prometheus-client writes them (a file written
    otherwise must not put other values among the labels the caps count)."""
    return isinstance(labels, dict) and all(
        isinstance(name, str) and isinstance(value, str) for name, value in labels.items()
    )
