"""``tracekit diff`` on calls real HTTP clients sent again: a redirect followed is one more call,
not a retry; a retry is one after a failed attempt.

Every request a client sends again is a CLIENT span of its own with
``http.request.resend_count`` (a redirect followed as well as a retry). Services in processes of
their own (``resend_services``) export into a real store; the real CLI reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from resend_services import resend_services, run_script, stored

from tracekit_cli.main import cli

CLIENTS = ("requests", "httpx", "urllib3", "aiohttp")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """The store, ``front``'s base URL and ``back``'s."""
    path = tmp_path_factory.mktemp("resends") / "tracekit.db"
    with resend_services(path) as urls:
        yield path, urls["front"], urls["back"]


def request(store: tuple[Path, str, str], correlation_id: str, path: str, spans: int) -> None:
    """One request to ``front``, whose ``spans`` spans are then awaited in the store."""
    answer = httpx.get(f"{store[1]}{path}", headers={"X-Correlation-ID": correlation_id})
    assert answer.status_code == 200, answer.text
    stored(store[0], correlation_id, spans)


def diff(store: tuple[Path, str, str], a: str, b: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["diff", a, b, "--store", str(store[0]), "--format", "json"])
    assert result.exit_code == 1, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def changes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["kind"], c["message"]) for c in doc["changes"] if c["category"] != "timing"]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_redirect_followed_is_one_more_call_not_a_retry(
    store: tuple[Path, str, str], client: str
) -> None:
    request(store, f"new-{client}", f"/call/{client}/item/new", 3)
    request(store, f"old-{client}", f"/call/{client}/item/old", 5)  # 302 to /item/new

    doc = diff(store, f"new-{client}", f"old-{client}")

    assert changes(doc) == [("calls", "front -> back: GET /item/{name}: 1 -> 2 calls")]
    assert "retries" not in doc["reasons"]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_redirect_to_another_service_is_a_hop_that_appeared(
    store: tuple[Path, str, str], client: str
) -> None:
    request(store, f"home-{client}", f"/call/{client}/done", 3)
    request(store, f"away-{client}", f"/call/{client}/away", 5)  # 302 to other's /done

    doc = diff(store, f"home-{client}", f"away-{client}")

    # the redirect's request was an added hop of its own, as if the code made a second call
    assert sorted(changes(doc)) == [
        ("added", "added front -> back: GET /away (redirected to other: GET /done)"),
        ("removed", "removed front -> back: GET /done"),
    ]
    assert sorted(changes(diff(store, f"away-{client}", f"home-{client}"))) == [
        ("added", "added front -> back: GET /done"),
        ("removed", "removed front -> back: GET /away (redirected to other: GET /done)"),
    ]


@pytest.mark.parametrize("client", ["requests", "urllib3"])
def test_a_retry_after_a_redirect_is_one_retry(store: tuple[Path, str, str], client: str) -> None:
    request(store, f"flaky-{client}", f"/call/{client}/flaky/once-{client}?fail=0", 3)
    request(store, f"via-{client}", f"/call/{client}/to-flaky/twice-{client}", 7)  # 302, 503, 200

    doc = diff(store, f"flaky-{client}", f"via-{client}")

    assert changes(doc) == [
        ("added", "added front -> back: GET /to-flaky/{key}"),
        ("retries", "front -> back: GET /flaky/{key}: 1 retry after HTTP 503 (A: no retries)"),
        ("new_error", "new error at front -> back: GET /flaky/{key}: HTTP 503"),
    ]


def from_a_script(
    store: tuple[Path, str, str], key: str, fail: int, client: str = "urllib3"
) -> str:
    """The trace id of a script's call to ``back`` answered 503 ``fail`` times, then 200."""
    assert run_script(store[0], store[2], client, f"/flaky/{key}?fail={fail}") == "200"
    found = CliRunner().invoke(
        cli, ["search", "--service", "script", "--limit", "1", "--store", str(store[0]),
              "--format", "json"],
    )  # fmt: skip
    trace_id = str(json.loads(found.stdout)["requests"][0]["trace_id"])
    stored(store[0], trace_id, 2 + 2 * fail + (client == "sdk"), by_trace=True)
    return trace_id


def test_the_retries_of_a_call_that_began_the_trace_are_its_retries(
    store: tuple[Path, str, str],
) -> None:
    once, retried = from_a_script(store, "script-once", 0), from_a_script(store, "script-2", 2)

    doc = diff(store, once, retried)

    assert changes(doc) == [
        ("retries", "script -> back: GET /flaky/{key}: 2 retries after HTTP 503 (A: no retries)"),
        ("new_error", "new error at script -> back: GET /flaky/{key}: HTTP 503"),
    ]
    assert "queue_wait" not in [part["component"] for part in doc["attribution"]]


def test_the_retries_of_a_call_inside_an_sdks_client_span_stay_inside_it(
    store: tuple[Path, str, str],
) -> None:
    once = from_a_script(store, "sdk-once", 0, "sdk")
    retried = from_a_script(store, "sdk-2", 2, "sdk")

    doc = diff(store, once, retried)

    assert changes(doc) == [
        ("retries", "script -> back: GET /flaky/{key}: 2 retries after HTTP 503 (A: no retries)"),
        ("new_error", "new error at script -> back: GET /flaky/{key}: HTTP 503"),
    ]
    # the backoff between the requests is the SDK's span's time, as under a server's span
    labels = {node["id"]: node["label"] for node in doc["nodes"]}
    shares = {labels.get(part["node"]): part["delta_ms"] for part in doc["attribution"]}
    assert shares["script: sdk.fetch"] > 100, doc["attribution"]
