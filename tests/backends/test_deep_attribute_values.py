"""An attribute value nested hundreds of levels deep costs that attribute, not the answer.

Python's JSON decoder gives up near a thousand levels of nesting (an ``arrayValue`` is three), and
the whole answer of Tempo or Jaeger was then "not JSON": ``trace`` exited 2 for one attribute of
one span. Served by the loopback fakes of ``tempo_fake`` and ``jaeger_fake`` (no Tempo or Jaeger
can run on these machines), in each server's real encoding, with the deep value written into the
answer's text as a sender's SDK would have it stored.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout
from werkzeug.wrappers import Request, Response

from tracekit_cli.main import cli

PLACEHOLDER = '{"stringValue":"deep value here"}'
BRACKETS = '"]]}} [[{{ \\" ]"'  # text that looks like JSON structure, in a string


def nested(kind: str, depth: int) -> str:
    """An OTLP AnyValue ``depth`` arrays (or maps) deep, as JSON text."""
    if kind == "arrayValue":
        opened, closed = '{"arrayValue":{"values":[', "]}}"
    else:
        opened, closed = '{"kvlistValue":{"values":[{"key":"k","value":', "}]}}"
    return opened * depth + '{"stringValue":"bottom"}' + closed * depth


class WithDeepValue:
    """``fake``'s answers, the placeholder attribute's value replaced by ``value``."""

    def __init__(self, fake: Any, value: str) -> None:
        self.fake, self.value = fake, value

    def __call__(self, request: Request) -> Response:
        answer = self.fake(request)
        text = answer.get_data(as_text=True).replace(PLACEHOLDER, self.value)
        return Response(text, answer.status_code, content_type="application/json")


@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
@pytest.mark.parametrize(("kind", "depth"), [("arrayValue", 400), ("kvlistValue", 20_000)])
def test_the_trace_is_shown_without_the_deep_attribute(
    serve: Any, backend: str, kind: str, depth: int
) -> None:
    spans = recent(checkout().spans)
    first = spans[0]
    marked = {**first.attributes, "deep": "deep value here", "brackets": json.loads(BRACKETS)}
    spans[0] = dataclasses.replace(first, attributes=marked)
    fake = FakeTempo(spans) if backend == "--tempo" else FakeJaeger(spans)
    url = serve(WithDeepValue(fake, nested(kind, depth))).url
    result = CliRunner().invoke(
        cli, ["trace", first.trace_id, backend, url, "--format", "json"],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    name = "Tempo" if backend == "--tempo" else "Jaeger"
    assert result.stderr == (
        f"tracekit: warning: {name} at {url} answered an attribute whose key or value is "
        "unreadable: it is left out\n"
    )
    path = json.loads(result.stdout)
    assert len(path["spans"]) == len([s for s in spans if s.trace_id == first.trace_id])
    shown = next(s for s in path["spans"] if s["span_id"] == first.span_id)["attributes"]
    assert "deep" not in shown
    assert shown["brackets"] == json.loads(BRACKETS)
    assert shown["correlation.id"] == first.attributes["correlation.id"]
