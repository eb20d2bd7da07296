"""An error a gateway in front of Tempo or Jaeger answers as a JSON document is said by its
message. Grafana's data-source proxy (``https://grafana/api/datasources/proxy/uid/UID``) and API
gateways (Kong, AWS API Gateway) answer ``{"message": "..."}``: the error line carried the whole
document, ``answered HTTP 401: {"message": "Invalid API key", "messageId": ..., "traceID": ""}``.
Real servers on loopback answer with such bodies.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.wrappers import Response

from tracekit_cli.main import cli

GRAFANA_401 = {
    "extra": None,
    "message": "Invalid API key",
    "messageId": "api-key.invalid",
    "statusCode": 401,
    "traceID": "",
}


PROXY = "/api/datasources/proxy/uid"  # where Grafana serves a data source's API


def answering(document: Any, status: int) -> Any:
    body = json.dumps(document)
    return lambda request: Response(body, status, content_type="application/json")


@pytest.mark.parametrize("flag", ["--tempo", "--jaeger"])
@pytest.mark.parametrize(
    ("document", "status", "said"),
    [
        (GRAFANA_401, 401, "HTTP 401: Invalid API key (check the tenant and credential headers)"),
        (
            {"message": "Forbidden"},
            403,
            "HTTP 403: Forbidden (check the tenant and credential headers)",
        ),
        (
            {"status": "error", "error": "tenant disabled\x1b[2J"},
            400,
            "HTTP 400: tenant disabled",
        ),
    ],
)
def test_a_gateways_json_error_is_said_by_its_message(
    serve: Any, flag: str, document: Any, status: int, said: str
) -> None:
    url = serve(answering(document, status)).url + PROXY  # each answers below a path of its own
    result = CliRunner().invoke(cli, ["search", flag, url], env={"TRACEKIT_BACKEND_HEADERS": ""})
    name = "Tempo" if flag == "--tempo" else "Jaeger"
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"tracekit: {name} at {url} answered {said}\n"


@pytest.mark.parametrize(
    ("command", "flag", "name"),
    [
        (["search"], "--tempo", "Tempo"),
        (["trace", "req-1"], "--jaeger", "Jaeger"),
        (["canary", "--service", "s", "--baseline", "1", "--canary", "2"], "--prometheus",
         "Prometheus"),
    ],
)  # fmt: skip
def test_grafanas_own_refusal_says_the_url_is_grafanas(
    serve: Any, command: list[str], flag: str, name: str
) -> None:
    """A backend URL that is Grafana's (the address a user opens Explore at) is refused, without
    a session, with Grafana's error document: the line told to check the tenant and credential
    headers, and with a token Grafana's own API answers instead (its dashboards). The URL is
    what to change: the backend's own, or Grafana's data-source proxy for it."""
    unauthorized = {**GRAFANA_401, "message": "Unauthorized", "messageId": "auth.unauthorized"}
    url = serve(answering(unauthorized, 401)).url
    result = CliRunner().invoke(cli, [*command, flag, url], env={"TRACEKIT_BACKEND_HEADERS": ""})
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: {name} at {url} answered HTTP 401: Unauthorized; that is Grafana, not"
        f" {name}: give the URL of {name} itself, or Grafana's data-source proxy for it"
        f" ({url}{PROXY}/UID) with a token header\n"
    )
    # below a path (a hosted Tempo's prefix, a proxy) the same answer is the credentials'
    hosted = CliRunner().invoke(cli, [*command, flag, f"{url}/tempo"],
                                env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
    assert hosted.stderr == (
        f"tracekit: {name} at {url}/tempo answered HTTP 401: Unauthorized (check the tenant and"
        " credential headers)\n"
    )


def test_a_json_document_without_a_message_is_said_as_it_came(serve: Any) -> None:
    url = serve(answering({"code": 7, "details": []}, 400)).url
    result = CliRunner().invoke(
        cli, ["search", "--tempo", url], env={"TRACEKIT_BACKEND_HEADERS": ""}
    )
    assert result.stderr == (
        f'tracekit: Tempo at {url} answered HTTP 400: {{"code": 7, "details": []}}\n'
    )


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_long_json_error_is_said_by_its_message(serve: Any, gzipped: bool) -> None:
    """A gateway's error document over 2,000 bytes (a stack trace beside the message, as Spring
    Boot's ``{"status": 401, "error": ..., "message": ..., "trace": "..."}``) was cut there, no
    longer JSON: the line carried the document's first 200 characters instead of the message."""
    frames = "".join(
        f"\tat com.example.gateway.Filter{i}.doFilter(Filter.java:{i})\n" for i in range(80)
    )
    document = {"status": 401, "error": "Unauthorized", "trace": frames, "message": "token expired"}
    body = json.dumps(document).encode()
    headers = {"Content-Encoding": "gzip"} if gzipped else {}

    def answer(request: Any) -> Response:
        sent = gzip.compress(body) if gzipped else body
        return Response(sent, 401, headers, content_type="application/json")

    url = serve(answer).url
    result = CliRunner().invoke(
        cli, ["search", "--jaeger", url], env={"TRACEKIT_BACKEND_HEADERS": ""}
    )
    assert len(body) > 2000
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: Jaeger at {url} answered HTTP 401: token expired (check the tenant and "
        "credential headers)\n"
    )
