"""A Jaeger answer holding a string that is not UTF-8 is read, the bad bytes as U+FFFD.

An OTLP receiver over gRPC does not check that strings are UTF-8 (an SDK in Rust or C++ may send
a header's raw bytes as an attribute), and Jaeger 2.x, an OpenTelemetry Collector, stores them
as they came; its api_v3 writes them back with pdata's JSON marshaler (json-iterator with
EscapeHTML off), which copies such bytes into the JSON raw, where Go's encoding/json would write
U+FFFD. One such attribute made the whole answer "something not JSON": `tracekit trace` exited
2, and a search of 100 traces failed for one span. A real server on loopback answers as Jaeger
does (``jaeger_fake``), with one attribute value's bytes made invalid.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import checkout
from werkzeug.wrappers import Request, Response

from tracekit_cli.main import cli

MARK = "agent-\u00e9\u00e9"
WRITTEN = json.dumps(MARK).strip('"').encode()  # as the fake writes it: \\u00e9 (ASCII)
NOT_UTF8 = MARK.encode("latin-1")  # 0xe9 alone: no UTF-8


def test_a_trace_with_an_attribute_that_is_not_utf8_is_shown(serve: Any) -> None:
    spans = recent(checkout().spans)
    spans[0] = dataclasses.replace(spans[0], attributes={**spans[0].attributes, "ua": MARK})
    jaeger = FakeJaeger(spans)

    def answer(request: Request) -> Response:
        served = jaeger(request)
        served.set_data(served.get_data().replace(WRITTEN, NOT_UTF8))
        return served

    url = serve(answer).url
    result = CliRunner().invoke(cli, ["trace", "req-checkout-1", "--jaeger", url, "--format",
                                      "json"], env={"COLUMNS": "100"})  # fmt: skip

    assert (result.exit_code, result.stderr) == (0, "")
    path = json.loads(result.stdout)
    assert path["spans"][0]["attributes"]["ua"] == "agent-\ufffd\ufffd"
    assert path["services"] == ["gateway", "orders", "payments", "bank"]
