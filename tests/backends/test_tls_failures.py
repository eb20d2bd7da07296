"""A TLS failure is said as one: a certificate signed by a CA this machine does not trust, or a
port that does not speak TLS. Before, both read "unreachable ([SSL: ...])" after three tries,
though the server had answered, and nothing said how to trust a private CA. Real servers on
loopback: HTTPS with the test certificate of ``tls/`` (whose CA no system trusts), plain HTTP.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout

from tracekit.backends._http import JsonClient

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
TLS = Path(__file__).with_name("tls")  # a test CA and the server certificate it signed


def tracekit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    without_ca = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    return subprocess.run(
        [TRACEKIT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**without_ca, "COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": "", **(env or {})},
    )


@pytest.mark.parametrize(("fake", "name"), [(FakeTempo, "Tempo"), (FakeJaeger, "Jaeger")])
def test_a_certificate_no_one_here_trusts_is_said_with_what_to_do(
    serve_tls: Any, fake: Any, name: str
) -> None:
    url = serve_tls(fake(recent(checkout().spans))).url
    done = tracekit("trace", "req-checkout-1", f"--{name.lower()}", url)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"tracekit: {name} at {url}: its TLS certificate is not trusted (unable to get local "
        "issuer certificate); if a private CA signed it, name that CA's PEM file in "
        "SSL_CERT_FILE\n"
    )
    ca = str(Path(__file__).with_name("tls") / "ca.pem")
    trusted = tracekit("trace", "req-checkout-1", f"--{name.lower()}", url,
                       env={"SSL_CERT_FILE": ca})  # fmt: skip
    assert (trusted.returncode, trusted.stderr) == (0, "")  # as the message says


def test_https_to_a_port_that_speaks_plain_http_is_said(serve: Any) -> None:
    plain = serve(FakeTempo(recent(checkout().spans)))
    url = plain.url.replace("http://", "https://")
    done = tracekit("search", "--tempo", url)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"tracekit: Tempo at {url}: the TLS handshake failed (")
    assert done.stderr.endswith("); does it serve HTTPS on that port?\n")
    assert done.stderr.count("\n") == 1


class ClientCertificateRequired:
    """A TLS server on loopback that requires a client certificate (mutual TLS, as a gateway
    in front of Tempo may): TLS 1.3 sends its refusal after the handshake, as the client reads
    the answer. The connection is held a second after, so the refusal arrives, not a reset."""

    def __init__(self) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
        self.context.load_verify_locations(TLS / "ca.pem")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self._handle(connection)

    def _handle(self, connection: socket.socket) -> None:
        wrapped = self.context.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        )
        with contextlib.suppress(ssl.SSLError, OSError):
            wrapped.do_handshake()
        time.sleep(1)
        wrapped.close()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@pytest.fixture
def silent() -> Any:
    """A port that takes every connection and never sends a byte: a TLS handshake there never
    ends (a proxy holding the connection, a service that waits for its own protocol)."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                taken.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for connection in taken:
        connection.close()


@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
def test_a_tls_handshake_that_never_ends_is_not_called_unreachable(
    silent: str, backend: str
) -> None:
    """It read 'unreachable (timed out)', which is kept for a connection never made."""
    done = tracekit("search", backend, silent, "--timeout", "1")
    name = backend.strip("-").capitalize()
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"tracekit: {name} at {silent}: took the connection but finished no TLS handshake within "
        "1 s (timed out): does it serve HTTPS on that port?\n"
    )


def test_the_client_offers_http_1_1_over_tls_as_pythons_http_client_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tracekit hands http.client a TLS context of its own (to tell a handshake that never ends
    from a slow answer); http.client offers ALPN ``http/1.1`` only in the context it makes
    itself, so a server choosing its protocol by ALPN (``h2`` or ``http/1.1``) heard no offer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
    context.set_alpn_protocols(["h2", "http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    offered: list[str | None] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            offered.append(tls.selected_alpn_protocol())
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")  # fmt: skip

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "ca.pem"))
    client = JsonClient(f"https://127.0.0.1:{listener.getsockname()[1]}", name="Tempo")
    try:
        assert client.get("/api/echo") == {}
    finally:
        server.join(10)
        listener.close()
    assert offered == ["http/1.1"]


class ClientCertificateAskedAfterHandshake(ClientCertificateRequired):
    """A server asking for a client certificate only once it has read the request (TLS 1.3
    post-handshake authentication, as Apache httpd does for a location under
    ``SSLVerifyClient require``). A client that did not offer it cannot be asked: Apache then
    answers 403 Forbidden (AH10158), as this one does."""

    def __init__(self) -> None:
        super().__init__()
        self.context.post_handshake_auth = True
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3

    def _handle(self, connection: socket.socket) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            self._answer(self.context.wrap_socket(connection, server_side=True))

    def _answer(self, tls: ssl.SSLSocket) -> None:
        tls.recv(65536)
        try:
            tls.verify_client_post_handshake()
        except ssl.SSLError:  # no post-handshake authentication offered
            page = b"<html><title>403 Forbidden</title></html>\n"
            tls.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: "
                        b"%d\r\nConnection: close\r\n\r\n%s" % (len(page), page))  # fmt: skip
            tls.close()
            return
        with contextlib.suppress(ssl.SSLError, OSError):
            tls.recv(65536)  # reads the client's (empty) certificate and refuses it
        time.sleep(1)
        tls.close()


@pytest.mark.parametrize(
    "asking", [ClientCertificateRequired, ClientCertificateAskedAfterHandshake]
)
@pytest.mark.parametrize("command", [["search"], ["trace", "req-checkout-1"]])
def test_a_backend_that_wants_a_client_certificate_is_said_as_such(
    command: list[str], asking: type[ClientCertificateRequired]
) -> None:
    """It ended in "internal error (SSLError: ...)": the refusal came as the answer was read.
    A server asking once it has read the request could not ask at all, so answered 403 ("check
    the tenant and credential headers"): http.client offers TLS 1.3 post-handshake
    authentication in the context it makes, and the one tracekit makes offered none."""
    server = asking()
    try:
        done = tracekit(*command, "--tempo", server.url, env={"SSL_CERT_FILE": str(TLS / "ca.pem")})
    finally:
        server.close()
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"tracekit: Tempo at {server.url}: it asks for a TLS client certificate, which tracekit "
        "does not send (tlsv13 alert certificate required); reach it through a proxy that "
        "holds one\n"
    )


@pytest.fixture
def another_address() -> Any:
    """The test certificate (for 127.0.0.1 and localhost) served on 127.0.0.2, a loopback
    address it does not name: its CA trusted, the certificate is for another host."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
    listener = socket.create_server(("127.0.0.2", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                connection = listener.accept()[0]
                with contextlib.suppress(ssl.SSLError, OSError):  # the client refuses it
                    context.wrap_socket(connection, server_side=True).close()
                connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"https://127.0.0.2:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.parametrize(("backend", "name"), [("--tempo", "Tempo"), ("--jaeger", "Jaeger")])
def test_a_certificate_for_another_host_is_not_said_to_want_its_ca(
    another_address: str, backend: str, name: str
) -> None:
    """It read 'its TLS certificate is not trusted (IP address mismatch, ...); if a private CA
    signed it, name that CA's PEM file in SSL_CERT_FILE', with that CA named there already:
    the advice mends an unknown signer, not a certificate issued for another host."""
    done = tracekit("search", backend, another_address, env={"SSL_CERT_FILE": str(TLS / "ca.pem")})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"tracekit: {name} at {another_address}: its TLS certificate is for another host (IP "
        "address mismatch, certificate is not valid for '127.0.0.2'.); the URL must name a host "
        "the certificate was issued for\n"
    )


@pytest.mark.parametrize(
    ("named", "said"),
    [
        ("missing.pem", "which cannot be read (no such file or directory): name the private CA's "
         "PEM file"),
        (".", "which cannot be read (is a directory): name the private CA's PEM file"),
        ("not-pem.pem", "which holds no PEM certificate: name the private CA's PEM file"),
        (str(TLS / "server.pem"),  # a certificate, but not the CA's
         "whose CAs did not sign it: name the PEM file of the CA that did"),
    ],
)  # fmt: skip
def test_a_ca_file_that_does_not_trust_the_certificate_is_named_with_why(
    serve_tls: Any, tmp_path: Path, named: str, said: str
) -> None:
    """OpenSSL passes over an SSL_CERT_FILE it cannot read, or one without a certificate in it
    (a typo, a folder, a DER file), without a word: the error told a user who had named their
    CA's file in SSL_CERT_FILE to do just that."""
    (tmp_path / "not-pem.pem").write_text("MIIB (a DER certificate, base64, no PEM header)\n")
    path = str(tmp_path / named) if not named.startswith("/") else named
    url = serve_tls(FakeTempo(recent(checkout().spans))).url
    done = tracekit("trace", "req-checkout-1", "--tempo", url, env={"SSL_CERT_FILE": path})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"tracekit: Tempo at {url}: its TLS certificate is not trusted (unable to get local "
        f"issuer certificate); SSL_CERT_FILE names {path}, {said}\n"
    )


def test_a_ca_file_that_is_a_fifo_is_refused_at_once(serve_tls: Any, tmp_path: Path) -> None:
    """Opening a FIFO waits for a writer: SSL_CERT_FILE naming one held each of the three tries
    for the whole timeout, and after 30 s the backend was said to be unreachable."""
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    url = serve_tls(FakeTempo(recent(checkout().spans))).url
    started = time.monotonic()
    done = tracekit("trace", "req-checkout-1", "--tempo", url, env={"SSL_CERT_FILE": str(fifo)})
    assert time.monotonic() - started < 5
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"tracekit: Tempo at {url}: SSL_CERT_FILE names {fifo}, which is a FIFO, not a regular "
        "file: name the PEM file of the CAs to trust\n"
    )
