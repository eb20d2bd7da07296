"""The warning of a failed export says what happened: the endpoint's certificate was not taken,
it does not speak TLS, or it answered 401/404. Before, each read "unreachable or refusing …
Start a collector there", though a collector was running and had answered. Real servers on
loopback (HTTPS with a self-signed certificate made here, plain HTTP), the real OTLP/HTTP
exporter in a service process.
"""

from __future__ import annotations

import http.server
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from conditions import need
from loopback import serve_in_thread

SERVICE = """
    import tracekit
    from opentelemetry import trace
    tracekit.init("shop")
    with trace.get_tracer("shop").start_as_current_span("charge"):
        pass
    trace.get_tracer_provider().force_flush()
"""
SECRET = "s3cret-token"
# The SDK names a failed attempt's error only in its line before it tries again, and skips that
# line when its wait (1 s, jittered to 1.2) would pass its timeout: the first attempt (TLS set up
# twice, the connection retried at once) must end 1.2 s before it. It took 0.2 s here, 1.06 s
# with the machine loaded: 2 s left no room, 5 s leaves 3.8.
EXPORT_TIMEOUT_S = "5"


class _Answering(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(self.server.status, "Go Away \x1b[31m")  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[object]:
    """Start an HTTP server answering every POST with a status, over TLS with a context."""
    stops: list[Callable[[], None]] = []

    def start(status: int, tls: ssl.SSLContext | None = None) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
        server.status = status  # type: ignore[attr-defined]
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        stops.append(serve_in_thread(server))
        return server.server_address[1]

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """The key and the self-signed certificate (PEM files) of 127.0.0.1, made now."""
    need(shutil.which("openssl") is not None, "openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return key, cert


@pytest.fixture
def self_signed(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1."""
    key, cert = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class _Refusing(grpc.GenericRpcHandler):
    """Every call refused with ``code`` and details a terminal would act on."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def service(self, details: object) -> grpc.RpcMethodHandler:
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(self.code, "go away \x1b[31m")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
def grpc_refusing() -> Iterator[object]:
    """Start a gRPC server refusing every call with a status code; its port."""
    servers: list[grpc.Server] = []

    def start(code: grpc.StatusCode, tls: tuple[Path, Path] | None = None) -> int:
        server = grpc.server(ThreadPoolExecutor(2), handlers=[_Refusing(code)])
        if tls is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            pair = [(tls[0].read_bytes(), tls[1].read_bytes())]
            port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(pair))
        server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.stop(None)


def _warnings(endpoint: str, **env: str) -> list[str]:
    """tracekit's lines on stderr of a service exporting one span to ``endpoint``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SERVICE)],
        env={
            **clean, "TRACEKIT_METRICS_PORT": "0", "TRACEKIT_EXPORTER": "otlp",
            "TRACEKIT_LOGS": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_TIMEOUT": EXPORT_TIMEOUT_S,
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {SECRET}", **env,
        },
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stderr
    assert "\x1b" not in done.stderr  # the server's reason phrase, escaped where it is quoted
    return [line for line in done.stderr.splitlines() if line.startswith("tracekit: ")]


def _could_not(port: int, scheme: str = "http") -> str:
    endpoint = f"{scheme}://127.0.0.1:{port}/v1/traces"
    return f"tracekit: could not export spans to the OTLP endpoint {endpoint}: "


def test_a_401_says_the_credentials_were_not_taken(serve: object) -> None:
    port = serve(401)  # type: ignore[operator]
    assert _warnings(f"http://127.0.0.1:{port}") == [
        _could_not(port) + "it answered 401 Unauthorized; they are dropped until it takes them."
        " Set the credentials it wants in OTEL_EXPORTER_OTLP_HEADERS (name=value)."
    ]


def test_a_404_says_the_path_is_not_otlps(serve: object) -> None:
    port = serve(404)  # type: ignore[operator]
    assert _warnings(f"http://127.0.0.1:{port}") == [
        _could_not(port) + "it answered 404 Not Found; they are dropped until it takes them."
        " Is the path OTLP/HTTP's? OTEL_EXPORTER_OTLP_ENDPOINT takes the base URL"
        " (http://host:4318), to which /v1/<signal> is added."
    ]


def test_a_certificate_signed_by_no_known_ca_says_what_to_trust(
    serve: object, self_signed: ssl.SSLContext
) -> None:
    port = serve(200, self_signed)  # type: ignore[operator]
    assert _warnings(f"https://127.0.0.1:{port}") == [
        _could_not(port, "https") + "its TLS certificate was not accepted (self-signed"
        " certificate); they are dropped until it is. Name the CA that signed it in"
        " OTEL_EXPORTER_OTLP_CERTIFICATE."
    ]


def test_https_to_a_plain_http_port_says_the_handshake_failed(serve: object) -> None:
    port = serve(200)  # type: ignore[operator]
    assert _warnings(f"https://127.0.0.1:{port}") == [
        _could_not(port, "https") + "the TLS handshake failed (WRONG_VERSION_NUMBER); they are"
        " dropped until it succeeds. Does it serve HTTPS on that port?"
    ]


def test_http_to_a_tls_port_says_it_may_want_https(
    serve: object, self_signed: ssl.SSLContext
) -> None:
    port = serve(200, self_signed)  # type: ignore[operator]
    assert _warnings(f"http://127.0.0.1:{port}") == [
        _could_not(port) + "it took the connection and closed it without an answer; they are"
        " dropped until it answers. If it serves HTTPS, the endpoint must start with https://."
    ]


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "Set the credentials it wants in"
         " OTEL_EXPORTER_OTLP_HEADERS (name=value)."),
        (grpc.StatusCode.UNIMPLEMENTED, "Is it an OTLP/gRPC endpoint (4317; OTLP/HTTP's is 4318)?"),
    ],
)  # fmt: skip
def test_a_grpc_refusal_says_its_status_without_the_servers_details(
    grpc_refusing: object, code: grpc.StatusCode, advice: str
) -> None:
    port = grpc_refusing(code)  # type: ignore[operator]
    endpoint = f"http://127.0.0.1:{port}"
    assert _warnings(endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc") == [
        f"tracekit: could not export spans to the OTLP endpoint {endpoint}: it answered"
        f" {code.name}; they are dropped until it takes them. {advice}"
    ]


def test_grpc_to_a_certificate_signed_by_no_known_ca_says_what_to_trust(
    grpc_refusing: object, certificate: tuple[Path, Path]
) -> None:
    """gRPC's failed handshakes read "unreachable or refusing ... Start a collector there",
    where the HTTP exporter's said what was wrong with the certificate."""
    port = grpc_refusing(grpc.StatusCode.UNAUTHENTICATED, certificate)  # type: ignore[operator]
    endpoint = f"https://127.0.0.1:{port}"
    assert _warnings(endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc") == [
        f"tracekit: could not export spans to the OTLP endpoint {endpoint}: its TLS certificate"
        " was not accepted (self signed certificate); they are dropped until it is. Name the CA"
        " that signed it in OTEL_EXPORTER_OTLP_CERTIFICATE."
    ]


def test_grpc_over_tls_to_a_plaintext_port_says_the_handshake_failed(
    grpc_refusing: object,
) -> None:
    port = grpc_refusing(grpc.StatusCode.UNAUTHENTICATED)  # type: ignore[operator]
    endpoint = f"http://127.0.0.1:{port}"
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "false"}
    assert _warnings(endpoint, **env) == [
        f"tracekit: could not export spans to the OTLP endpoint {endpoint}: the TLS handshake"
        " failed (WRONG_VERSION_NUMBER); they are dropped until it succeeds. Does it serve gRPC"
        " over TLS on that port?"
    ]


def test_http_to_a_grpc_port_says_which_port_or_protocol_to_use(grpc_refusing: object) -> None:
    """OTLP/HTTP sent to a collector's OTLP/gRPC port (4317, the port most examples show) read
    "unreachable or refusing ... Start a collector there", though a collector was answering."""
    port = grpc_refusing(grpc.StatusCode.UNAUTHENTICATED)  # type: ignore[operator]
    assert _warnings(f"http://127.0.0.1:{port}") == [
        _could_not(port) + "it answered in HTTP/2, as an OTLP/gRPC port (4317) does, not in"
        " OTLP/HTTP; they are dropped until it takes them. Send to its OTLP/HTTP port (4318),"
        " or set OTEL_EXPORTER_OTLP_PROTOCOL=grpc."
    ]


def test_grpc_to_an_http_port_says_which_port_or_protocol_to_use(serve: object) -> None:
    port = serve(200)  # type: ignore[operator]
    endpoint = f"http://127.0.0.1:{port}"
    assert _warnings(endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc") == [
        f"tracekit: could not export spans to the OTLP endpoint {endpoint}: it answered, but"
        " not in HTTP/2 as OTLP/gRPC does (an OTLP/HTTP port, 4318, answers in HTTP/1.1); they"
        " are dropped until it takes them. Send to its OTLP/gRPC port (4317), or unset"
        " OTEL_EXPORTER_OTLP_PROTOCOL for OTLP/HTTP."
    ]


def test_grpc_to_an_endpoint_without_a_scheme_says_it_went_over_tls(
    grpc_refusing: object,
) -> None:
    """``OTEL_EXPORTER_OTLP_ENDPOINT=host:4317`` (no ``http://``) makes the gRPC exporter use
    TLS; a plaintext collector there was only asked whether it serves TLS."""
    port = grpc_refusing(grpc.StatusCode.UNAUTHENTICATED)  # type: ignore[operator]
    endpoint = f"127.0.0.1:{port}"
    assert _warnings(endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc") == [
        f"tracekit: could not export spans to the OTLP endpoint {endpoint}: the TLS handshake"
        " failed (WRONG_VERSION_NUMBER); they are dropped until it succeeds. Does it serve gRPC"
        " over TLS on that port? Without http:// the exporter uses TLS: for plaintext,"
        f" http://{endpoint}."
    ]
