"""What differs between two requests, or two sets of them: the analysis behind ``tracekit diff``.

Library code on the path engine's results (no click, no rich): ``compare_paths`` takes two
reconstructed paths, ``compare_sets`` two lists of them (``find_request_sets`` selects them from
any read backend), and both return plain results that ``to_json`` turns into the
``tracekit.diff/v1`` document. Spans are matched by their chain of (service, normalised name)
ancestors, a hop (client and server, producer and consumer) is one node, and the change in
duration is attributed to nodes by critical-path time. Deterministic: the same input gives the
same document, byte for byte.
"""

from __future__ import annotations

from .model import Change, NodeDiff, PairDiff, Share, Side, reasons
from .pair import compare_paths
from .report import SCHEMA_ID, load_schema, to_json
from .select import Selector, find_request_sets, parse_match
from .sets import SetDiff, SetNode, SetSettings, SetSide, compare_sets
from .settings import CATEGORIES, FailOn, Thresholds, parse_fail_on

__all__ = [
    "CATEGORIES",
    "SCHEMA_ID",
    "Change",
    "FailOn",
    "NodeDiff",
    "PairDiff",
    "Selector",
    "SetDiff",
    "SetNode",
    "SetSettings",
    "SetSide",
    "Share",
    "Side",
    "Thresholds",
    "compare_paths",
    "compare_sets",
    "find_request_sets",
    "load_schema",
    "parse_fail_on",
    "parse_match",
    "reasons",
    "to_json",
]
