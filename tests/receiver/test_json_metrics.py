"""OTLP/JSON metrics are stepped over, never built: every valid request must still be read as
``json.loads`` reads it (the same metrics counted), whatever its metrics hold and however it is
spaced, and a body that is not one JSON object must still be refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.receiver._decoded import MalformedRequest
from tracekit.receiver._json_metrics import decode_metrics

# strings that look like JSON's own syntax, escapes and non-ASCII included
TEXT = st.text(alphabet=st.sampled_from('ab{}[]",:\\/ \n\té€😀\x00'), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=30,
)
METRIC = st.dictionaries(TEXT, VALUES, max_size=4)


def _scope(metrics: list[Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {"scope": {"name": "s[1]"}, **extra, "metrics": metrics}


@settings(max_examples=200, deadline=None)
@given(
    scopes=st.lists(st.lists(METRIC, max_size=4), max_size=3),
    extra=st.dictionaries(TEXT, VALUES, max_size=2),
    snake=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
)
def test_every_valid_request_counts_its_metrics_as_json_loads_does(
    scopes: list[list[Any]], extra: dict[str, Any], snake: bool, indent: int | None
) -> None:
    names = ("resource_metrics", "scope_metrics") if snake else ("resourceMetrics", "scopeMetrics")
    extra = {k: v for k, v in extra.items() if k not in ("metrics", *names)}
    resource = {"resource": {"attributes": []}, **extra,
                names[1]: [_scope(metrics, extra) for metrics in scopes]}  # fmt: skip
    document = {**extra, names[0]: [resource, None]}
    body = json.dumps(document, indent=indent, ensure_ascii=bool(indent)).encode()
    assert decode_metrics(body).total == sum(len(metrics) for metrics in scopes)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"resourceMetrics": [}', b'{"a": "unterminated}', b'{"a": 1,}', b"{} x",
     b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"a": [1, 2}]}]}]}'],
)  # fmt: skip
def test_a_body_that_is_not_one_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_metrics(body)
