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
    url = serve(answering(document, status)).url
    result = CliRunner().invoke(cli, ["search", flag, url], env={"TRACEKIT_BACKEND_HEADERS": ""})
    name = "Tempo" if flag == "--tempo" else "Jaeger"
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"tracekit: {name} at {url} answered {said}\n"


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
