"""``OTEL_TRACES_EXPORTER`` and ``OTEL_LOGS_EXPORTER``, as the OpenTelemetry SDKs read them:
``none`` keeps that signal from being exported, ``console`` prints it; otherwise ``exporter``
(``TRACEKIT_EXPORTER``) chooses. Before, both were ignored: a service that ships its logs from
stdout (``OTEL_LOGS_EXPORTER=none``) exported every line a second time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from loopback import free_port

from tracekit.store import Store

SCRIPT = """
    import logging
    import tracekit
    from opentelemetry import trace
    tracekit.init("orders")
    tracekit.correlation.set_correlation_id("order-7")
    with trace.get_tracer("t").start_as_current_span("charge"):
        logging.getLogger("orders").warning("card declined")
    tracekit.shutdown()
"""


def _run(tmp_path: Path, **env: str) -> tuple[list[str], list[str], str]:
    """Run the service into a store; the stored span names, log bodies, and its stdout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    store = tmp_path / "t.db"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        env={
            **clean, "TRACEKIT_METRICS_PORT": "0", "TRACEKIT_EXPORTER": "store",
            "TRACEKIT_STORE": str(store), **env,
        },
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if not store.exists():
        return [], [], result.stdout
    return *_stored(store), result.stdout


def _stored(store: Path) -> tuple[list[str], list[str]]:
    """The span names and log bodies of the request the script makes."""
    with Store(store) as source:
        spans = [s.name for s in source.spans_by_correlation_id("order-7")]
        logs = [str(r.body) for r in source.logs_by_correlation_id("order-7")]
    return spans, logs


@pytest.mark.parametrize("value", ["none", "NONE", "otlp,none"])
def test_otel_logs_exporter_none_exports_no_logs(tmp_path: Path, value: str) -> None:
    assert _run(tmp_path, OTEL_LOGS_EXPORTER=value)[:2] == (["charge"], [])


def test_otel_traces_exporter_none_exports_no_spans(tmp_path: Path) -> None:
    assert _run(tmp_path, OTEL_TRACES_EXPORTER="none")[:2] == ([], ["card declined"])


def test_otel_logs_exporter_console_prints_the_logs(tmp_path: Path) -> None:
    spans, logs, stdout = _run(tmp_path, OTEL_LOGS_EXPORTER="console")
    assert (spans, logs) == (["charge"], [])
    assert '"body": "card declined"' in stdout


@pytest.mark.parametrize("value", ["otlp", "otlp_proto_http", ""])
def test_other_names_leave_the_choice_to_the_exporter_option(tmp_path: Path, value: str) -> None:
    variables = {"OTEL_LOGS_EXPORTER": value, "OTEL_TRACES_EXPORTER": value}
    assert _run(tmp_path, **variables)[:2] == (["charge"], ["card declined"])


def test_otel_sdk_disabled_exports_nothing_and_serves_no_metrics(tmp_path: Path) -> None:
    """OTEL_SDK_DISABLED=true turns every OpenTelemetry signal off, over any other setting:
    tracekit still stored the span and the log line and served metrics on its port."""
    port = free_port()
    probe = f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {port})) != 0)"
    script = textwrap.dedent(SCRIPT).replace("tracekit.shutdown()", probe + "\ntracekit.shutdown()")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    store = tmp_path / "t.db"
    env = {**clean, "OTEL_SDK_DISABLED": "true", "TRACEKIT_METRICS_PORT": str(port),
           "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip

    assert (result.returncode, result.stdout) == (0, "True\n"), result.stderr
    assert not store.exists() or _stored(store) == ([], [])


NO_HOME_SCRIPT = """
import logging, pwd

def no_entry(uid):  # a container's arbitrary uid: no passwd entry, and no $HOME either
    raise KeyError(uid)

pwd.getpwuid = no_entry
import tracekit
from opentelemetry import trace

tracekit.init("checkout")
with trace.get_tracer("app").start_as_current_span("charge"):
    logging.getLogger("app").warning("card declined")
print("served")
tracekit.shutdown()
"""


def test_the_store_exporter_with_no_home_directory_leaves_the_service_running(
    tmp_path: Path,
) -> None:
    """With no TRACEKIT_STORE, no $HOME and no passwd entry, tracekit.init() raised
    "RuntimeError: Could not determine home directory." and the service never started."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    clean.pop("HOME", None)
    clean.pop("XDG_DATA_HOME", None)
    env = {**clean, "TRACEKIT_EXPORTER": "store", "TRACEKIT_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-c", NO_HOME_SCRIPT], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)  # fmt: skip

    assert (result.returncode, result.stdout) == (0, "served\n"), result.stderr
    assert "Traceback" not in result.stderr
    assert "spans are not stored: no home directory" in result.stderr
    assert "set TRACEKIT_STORE" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no store made somewhere unexpected


PORT_PROBE = "import socket; print(socket.socket().connect_ex(('127.0.0.1', {port})) == 0)"


def _serves_metrics(**env: str) -> bool:
    """Whether a service started with ``env`` listens on its metrics port."""
    port = free_port()
    script = f"import tracekit\ntracekit.init('orders')\n{PORT_PROBE.format(port=port)}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env = {**clean, "TRACEKIT_EXPORTER": "none", "TRACEKIT_METRICS_PORT": str(port), **env}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout == "True\n"


@pytest.mark.parametrize("value", ["none", "None", "prometheus,none"])
def test_otel_metrics_exporter_none_serves_no_metrics_port(value: str) -> None:
    """OTEL_METRICS_EXPORTER=none was ignored: the service still opened port 9464 on every
    interface, which an OpenTelemetry user had turned off."""
    assert not _serves_metrics(OTEL_METRICS_EXPORTER=value)


@pytest.mark.parametrize("value", ["prometheus", "otlp", ""])
def test_other_metrics_exporter_names_keep_the_metrics_port(value: str) -> None:
    assert _serves_metrics(OTEL_METRICS_EXPORTER=value)


@pytest.mark.parametrize("value", ["1", "yes", "on"])
def test_an_otel_sdk_disabled_other_than_true_or_false_is_warned_of(
    tmp_path: Path, value: str
) -> None:
    """Only ``true`` turns the SDK off (OpenTelemetry's rule: any other value is false, with a
    warning). ``OTEL_SDK_DISABLED=1`` left telemetry on without a word."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    store = tmp_path / "t.db"
    env = {**clean, "OTEL_SDK_DISABLED": value, "TRACEKIT_METRICS_PORT": "0",
           "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"tracekit: OTEL_SDK_DISABLED={value!r} is neither true nor false; telemetry stays on"
        " (only true turns it off)",
        "card declined",
    ]
    assert _stored(store) == (["charge"], ["card declined"])
