"""A TLS failure is said as one: a certificate signed by a CA this machine does not trust, or a
port that does not speak TLS. Before, both read "unreachable ([SSL: ...])" after three tries,
though the server had answered, and nothing said how to trust a private CA. Real servers on
loopback: HTTPS with the test certificate of ``tls/`` (whose CA no system trusts), plain HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))


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
