"""A request older than a remote backend's search for a correlation ID reaches (Jaeger: two
days, as tracekit asks it; Tempo: its longest search, 168h by default) is still held there and
read by its trace ID at any age. ``trace <correlation ID>`` said only "no request found" (exit 1),
as for a request the backend never held; it now says how far back it searched, and that the
trace ID finds an older request.

Real servers on loopback answer as jaeger-query and Tempo do (``jaeger_fake``, ``tempo_fake``),
holding the checkout request of eight days ago.
"""

from __future__ import annotations

from typing import Any

import pytest
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout
from tracekit_process import tracekit

EIGHT_DAYS = 8 * 24 * 3600
BACKENDS = {"--jaeger": (FakeJaeger, "2 days"), "--tempo": (FakeTempo, "168h")}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_an_older_request_is_said_to_be_found_by_its_trace_id(serve: Any, backend: str) -> None:
    fake, searched_back = BACKENDS[backend]
    spans = recent(checkout().spans, seconds_ago=EIGHT_DAYS)
    url = serve(fake(spans)).url

    by_correlation = tracekit("trace", "req-checkout-1", backend, url, "--timeout", "5")
    assert (by_correlation.returncode, by_correlation.stdout) == (1, "")
    assert by_correlation.stderr == (
        f"tracekit: no request found for 'req-checkout-1': the correlation ID is searched for "
        f"over the last {searched_back}; an older request is found by its trace ID\n"
    )
    by_trace_id = tracekit("trace", spans[0].trace_id, backend, url, "--format", "json")
    assert by_trace_id.returncode == 0, by_trace_id.stderr
    assert '"correlation_id": "req-checkout-1"' in by_trace_id.stdout


def test_an_unknown_trace_id_gets_no_such_hint(serve: Any) -> None:
    url = serve(FakeJaeger(recent(checkout().spans))).url
    done = tracekit("trace", "ab" * 16, "--jaeger", url, "--timeout", "5")
    assert (done.returncode, done.stderr) == (1, f"tracekit: no request found for {'ab' * 16!r}\n")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_diff_says_so_too(serve: Any, backend: str) -> None:
    fake, searched_back = BACKENDS[backend]
    spans = recent(checkout().spans, seconds_ago=EIGHT_DAYS)
    url = serve(fake(spans)).url

    done = tracekit("diff", "req-checkout-1", spans[0].trace_id, backend, url, "--timeout", "5")
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == (
        f"tracekit: no request found for 'req-checkout-1'; correlation IDs are searched for over "
        f"the last {searched_back}; an older request is found by its trace ID\n"
    )
