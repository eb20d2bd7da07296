"""Where the metrics port listens: ``metrics_host`` (``TRACEKIT_METRICS_HOST``).

Every interface by default, as Prometheus scrapes from outside; loopback only where the scraper
shares the host or pod, IPv6 where the cluster is. Real sockets on loopback: 127.0.0.2 is a
second address of the loopback interface, which a server bound to 127.0.0.1 does not answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest
from loopback import free_port

from tracekit import config, metrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@contextlib.contextmanager
def _serving(**options: object) -> Iterator[int]:
    port = free_port()
    server = metrics.install(config.resolve("svc", environ={}, metrics_port=port, **options))
    assert server is not None
    try:
        yield port
    finally:
        server.close()


def _scrape(url: str) -> httpx.Response:
    return httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=5)


def test_by_default_every_interface_is_served() -> None:
    with _serving() as port:
        assert _scrape(f"http://127.0.0.2:{port}/").text.rstrip().endswith("# EOF")


def test_a_loopback_host_serves_loopback_only() -> None:
    with _serving(metrics_host="127.0.0.1") as port:
        assert _scrape(f"http://127.0.0.1:{port}/").status_code == 200
        with pytest.raises(httpx.ConnectError):
            _scrape(f"http://127.0.0.2:{port}/")


@pytest.mark.parametrize("host", ["::1", "::"])
def test_an_ipv6_host_serves_ipv6(host: str) -> None:
    with _serving(metrics_host=host) as port:
        assert _scrape(f"http://[::1]:{port}/").text.rstrip().endswith("# EOF")


def test_the_variable_sets_the_host() -> None:
    environ = {"TRACEKIT_METRICS_HOST": " 127.0.0.1 ", "TRACEKIT_METRICS_PORT": "0"}
    assert config.resolve("svc", environ=environ).metrics_host == "127.0.0.1"


@pytest.mark.parametrize("value", ["0.0.0.0:9464", "http://localhost", "", "two words", "-bad"])
def test_a_host_that_is_no_address_fails_init_naming_the_variable(value: str) -> None:
    with pytest.raises(config.ConfigError, match="TRACEKIT_METRICS_HOST: expected an IP address"):
        config.resolve("svc", environ={"TRACEKIT_METRICS_HOST": value})
