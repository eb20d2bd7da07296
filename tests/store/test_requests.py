"""The requests ``tracekit canary`` reads from the store, when stored attributes are hostile."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tracekit.records import Attributes, SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

T0 = 1_700_000_000_000_000_000
WINDOW = ("--start", "2023-11-14T22:13:20+00:00", "--end", "2023-11-14T22:43:20+00:00")


def _request(number: int, version: str, attributes: Attributes) -> SpanRecord:
    start = T0 + number * 10**9
    return SpanRecord(
        f"{number:032x}", f"{number:016x}", None, "orders", "GET /orders", "SERVER",
        start, start + 10**7, attributes={"http.route": "/orders", **attributes},
        resource={"service.name": "orders"}, service_version=version,
    )  # fmt: skip


def test_a_status_code_of_digits_int_cannot_read_leaves_the_verdict_to_the_others(
    tmp_path: Path,
) -> None:
    """One span from any OTLP client, its status code '500' and 70 superscript zeros (digits to
    ``str.isdigit``, not to ``int``) beside a list of numbers the picker's quick search takes
    for the status key: ``tracekit canary`` said 'invalid literal for int()' and exit 2 for the
    whole window. That span is no 5xx response; the verdict comes from every request."""
    hostile: Attributes = {
        "http.response.status_code": "500" + "\u2070" * 70,  # past interning: stored as text
        "x.numbers": [n for key in range(1, 200) for n in (key, 500)],
    }
    spans = [_request(n, "1.0", {"http.response.status_code": 200}) for n in range(1, 31)]
    spans += [_request(n, "1.1", {"http.response.status_code": 200}) for n in range(31, 61)]
    spans.append(_request(61, "1.1", hostile))
    store_path = tmp_path / "tracekit.db"
    with Store(store_path) as store:
        store.write_spans(spans)

    result = CliRunner().invoke(cli, [
        "canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1", *WINDOW,
        "--store", str(store_path), "--format", "json",
    ])  # fmt: skip

    assert result.exit_code == 4, result.output  # inconclusive: too few requests to time
    document = json.loads(result.stdout)
    assert document["canary"]["requests"] == 31
    [errors] = [m for m in document["metrics"] if m["name"] == "error_rate"]
    assert errors["summary"]["canary"]["errors"] == 0
