"""An error answered as an HTML page (a proxy's ``502 Bad Gateway``, a single-sign-on login page in
front of Tempo or Jaeger) is said by its title. Before, the error line carried the page's markup:
``answered HTTP 403: <!DOCTYPE html> <html lang="en"> <head> <meta charset=...``. Real servers on
loopback answer with the pages nginx and a login proxy send.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.wrappers import Request, Response

from tracekit.backends.jaeger import JaegerSource
from tracekit.backends.tempo import TempoSource
from tracekit.records import BackendError
from tracekit_cli.main import cli

NGINX_502 = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx/1.25.3</center>
</body>
</html>
"""
LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Sign in &middot; Example SSO</title><link rel="stylesheet" href="/static/app.css"></head>
<body><form method="post" action="/oauth2/start"><button>Sign in with Google</button></form>
</body></html>"""


def html(page: str, status: int) -> Any:
    return lambda request: Response(page, status, content_type="text/html")


@pytest.mark.parametrize("source", [TempoSource, JaegerSource])
def test_a_proxys_error_page_is_said_by_its_title(serve: Any, source: Any) -> None:
    url = serve(html(NGINX_502, 502)).url
    with pytest.raises(BackendError) as caught:
        source(url, retries=0).spans_by_trace_ids(["a" * 32])
    name = "Tempo" if source is TempoSource else "Jaeger"
    assert str(caught.value) == f"{name} at {url}: HTTP 502: 502 Bad Gateway"


def test_a_login_page_is_one_line_with_what_to_check(serve: Any) -> None:
    url = serve(html(LOGIN_PAGE, 403)).url
    result = CliRunner().invoke(
        cli, ["search", "--tempo", url], env={"TRACEKIT_BACKEND_HEADERS": ""}
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: Tempo at {url} answered HTTP 403: Sign in \u00b7 Example SSO "
        "(check the tenant and credential headers)\n"
    )


def test_a_page_without_a_title_is_said_by_its_text(serve: Any) -> None:
    url = serve(html("<html><body><h1>Forbidden</h1><p>by policy</p></body></html>", 403)).url
    with pytest.raises(BackendError) as caught:
        TempoSource(url, retries=0).spans_by_trace_ids(["a" * 32])
    assert str(caught.value) == (
        f"Tempo at {url} answered HTTP 403: Forbidden by policy "
        "(check the tenant and credential headers)"
    )


def test_a_login_page_a_redirect_led_to_is_said_by_its_title(serve: Any) -> None:
    """A login proxy on the same host sends the request on to its sign-in page, answered 200.
    Before: "answered something not JSON"."""

    def proxy(request: Request) -> Response:
        if request.path == "/oauth2/sign_in":
            return Response(LOGIN_PAGE, 200, content_type="text/html")
        return Response("", 302, {"Location": "/oauth2/sign_in"})

    url = serve(proxy).url
    result = CliRunner().invoke(
        cli, ["trace", "req-checkout-1", "--jaeger", url], env={"TRACEKIT_BACKEND_HEADERS": ""}
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: Jaeger at {url} answered an HTML page (Sign in \u00b7 Example SSO), not "
        "JSON: is the URL its API's, and are the credential headers right?\n"
    )
