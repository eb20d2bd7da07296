"""A backend reached through the proxy the environment names (``http_proxy``, ``HTTPS_PROXY``),
as urllib, curl and most tools do. When that proxy was down, or asked for credentials, the line
read ``Tempo at URL: unreachable ([Errno 111] Connection refused)`` or ``Tempo at URL answered
HTTP 407``, and sent users to look at a Tempo that was up. The line names the proxy (never its
user and password) and the variable that chose it. ``tracekit`` runs in a process of its own
with the proxy variables set; the proxy is a real server on loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import Topology
from tracekit_process import TRACEKIT
from werkzeug.wrappers import Request, Response

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def tracekit_with(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``tracekit *args`` with the proxy variables ``environment`` sets and no others."""
    inherited = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    return subprocess.run(
        [TRACEKIT, *args], capture_output=True, text=True, timeout=60,
        env={**inherited, "TRACEKIT_BACKEND_HEADERS": "", **environment},
    )  # fmt: skip


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


def tempo_with_a_request(serve: Any) -> str:
    t = Topology("req-proxied")
    t.span("web", "GET /", "SERVER", 0, 20)
    return str(serve(FakeTempo(recent(t.spans))).url)


def test_a_proxy_that_refuses_the_connection_is_named_not_the_backend(serve: Any) -> None:
    tempo, port = tempo_with_a_request(serve), closed_port()
    proxy = {"HTTP_PROXY": f"http://ops:s3cret-pass@127.0.0.1:{port}"}

    done = tracekit_with(proxy, "trace", "req-proxied", "--tempo", tempo, "--timeout", "2")

    assert done.returncode == 2
    assert done.stderr == (
        f"tracekit: Tempo at {tempo}: unreachable through the proxy http://127.0.0.1:{port} "
        "that HTTP_PROXY names ([Errno 111] Connection refused; NO_PROXY lists the hosts to "
        "reach without it)\n"
    )


def test_a_proxy_asking_for_credentials_is_named_as_the_one_asking(serve: Any) -> None:
    tempo = tempo_with_a_request(serve)
    asking = serve(lambda request: Response("Proxy Authentication Required", 407))
    proxy = {"http_proxy": asking.url}

    done = tracekit_with(proxy, "trace", "req-proxied", "--tempo", tempo)

    assert done.returncode == 2
    assert done.stderr == (
        f"tracekit: Tempo at {tempo} answered HTTP 407: Proxy Authentication Required from the "
        f"proxy {asking.url} that http_proxy names (give its user and password in that "
        "variable)\n"
    )
    assert len(asking.requests) == 1  # a refusal, not retried


def test_a_host_no_proxy_lists_is_reached_directly(serve: Any) -> None:
    tempo = tempo_with_a_request(serve)
    proxy = {"HTTP_PROXY": f"http://127.0.0.1:{closed_port()}", "NO_PROXY": "127.0.0.1"}

    done = tracekit_with(proxy, "trace", "req-proxied", "--tempo", tempo, "--format", "text")

    assert (done.returncode, done.stderr) == (0, "")
    assert "GET /" in done.stdout


def test_a_request_through_a_working_proxy_reaches_the_backend(serve: Any) -> None:
    tempo = tempo_with_a_request(serve)
    seen: list[str] = []

    def forwarding(request: Request) -> Response:  # the absolute URL a proxy is asked for
        seen.append(request.environ["REQUEST_URI"])
        return Response(status=502)

    proxy = serve(forwarding)
    done = tracekit_with({"http_proxy": proxy.url}, "search", "--tempo", tempo, "--timeout", "2")

    assert seen and all(uri.startswith(f"{tempo}/api/search?") for uri in seen)
    assert done.returncode == 2
    assert done.stderr.startswith(f"tracekit: Tempo at {tempo}: HTTP 502")


def test_a_proxy_url_that_is_not_valid_is_named_not_the_backend_url(serve: Any) -> None:
    tempo = tempo_with_a_request(serve)

    done = tracekit_with({"https_proxy": "http://u:p@proxy:port"}, "search", "--tempo",
                         tempo.replace("http://", "https://"))  # fmt: skip

    assert done.returncode == 2
    assert done.stderr == (
        "tracekit: the proxy http://proxy:port that https_proxy names, is not valid: "
        "nonnumeric port: 'port'\n"
    )


def test_a_proxy_refusing_the_tunnel_to_an_https_backend_is_one_answer_not_retried(
    serve_raw: Any,
) -> None:
    refusing = serve_raw(
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
    )
    proxy = {"HTTPS_PROXY": refusing.url.replace("http://", "http://ops:s3cret@")}

    done = tracekit_with(proxy, "search", "--tempo", "https://tempo.example.invalid")

    assert done.returncode == 2
    assert done.stderr == (
        "tracekit: Tempo at https://tempo.example.invalid: the proxy "
        f"{refusing.url} that HTTPS_PROXY names refused a connection to it (407 Proxy "
        "Authentication Required) (give its user and password in that variable)\n"
    )
    assert refusing.connections == 1
