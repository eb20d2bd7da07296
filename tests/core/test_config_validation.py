"""Every TRACEKIT_* value is checked when the options are resolved, with a message naming it.

A bad value must fail ``init`` (the application's start), never each request afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tracekit import config
from tracekit.config import ConfigError
from tracekit.store import Store

BAD_VALUES = [
    ("TRACEKIT_EXCLUDED_URLS", "(", "invalid regular expression '('"),
    ("TRACEKIT_EXCLUDED_URLS", "^/x$,(?i)^/a$", "do not combine"),
    ("TRACEKIT_METRICS_PORT", "70000", "port number from 0 to 65535, got 70000"),
    ("TRACEKIT_METRICS_PORT", "-1", "port number"),
    ("TRACEKIT_METRICS_PORT", "ninety", "whole number, got 'ninety'"),
    ("TRACEKIT_METRICS_HOST", "0.0.0.0:9464", "expected an IP address or a host name"),
    ("TRACEKIT_EXPORTER", "jaeger", "must be one of otlp, store, console, none, not 'jaeger'"),
    ("TRACEKIT_MODE", "half", "must be one of full, correlation"),
    ("TRACEKIT_PUBLIC_ENDPOINT", "maybe", "expected true or false"),
    ("TRACEKIT_LOGS", "2", "expected true or false"),
    # an unset shell variable in a compose file (TRACEKIT_LOGS=${TRACEKIT_LOGS}) turned it off
    ("TRACEKIT_LOGS", "", "expected true or false, got ''"),
    ("TRACEKIT_EXPORT_LOGS", "nope", "expected true or false"),
    ("TRACEKIT_CORRELATION_HEADERS", "X-Id,Bad Header", "not a valid HTTP header name"),
    ("TRACEKIT_CORRELATION_HEADERS", " , ", "at least one header name"),
    ("TRACEKIT_RESPONSE_HEADER", "X:Id", "not a valid HTTP header name"),
    # a ConfigMap's block scalar ends with a newline: it was sent, splitting the header line
    ("TRACEKIT_RESPONSE_HEADER", "X-Request-ID\n", "not a valid HTTP header name"),
    ("TRACEKIT_INSTRUMENT", "requests,pyka", "unknown 'pyka'"),
    # TRACEKIT_INSTRUMENT=${TRACEKIT_INSTRUMENT} unset in a compose file instrumented nothing
    ("TRACEKIT_INSTRUMENT", "", "expected all or instrumentation names, got ''"),
    ("TRACEKIT_INSTRUMENT", " , ", "expected all or instrumentation names"),
    ("TRACEKIT_DISABLED_INSTRUMENTATIONS", "all", "unknown 'all'"),
    ("TRACEKIT_SERVICE_NAME", "  ", "non-empty string"),
    ("TRACEKIT_SERVICE_VERSION", "1.0\x1b[31m", "printable characters"),
    ("TRACEKIT_ENVIRONMENT", "x" * 300, "at most 256"),
    ("TRACEKIT_STORE", "", "non-empty string"),
    ("TRACEKIT_MESSAGE_CORRELATION_PROPERTY", "\n", "non-empty string"),
    ("TRACEKIT_REDIS_PUBSUB_CHANNELS", "prices.*,bad\x1b[0m", "printable characters"),
]


@pytest.mark.parametrize(("variable", "value", "says"), BAD_VALUES)
def test_a_bad_variable_is_refused_with_its_name(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config.resolve(environ={variable: value})

    message = str(refused.value)
    assert message.startswith(f"{variable}: "), message
    assert says in message


def test_every_variable_is_covered_by_a_bad_value() -> None:
    checked = {variable for variable, _, _ in BAD_VALUES}
    assert {config.env_var(f.name) for f in fields(config.Options)} <= checked


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("excluded_urls", ["^/ok$", "("], "invalid regular expression '('"),
        ("metrics_port", 70000, "port number"),
        ("metrics_port", True, "port number"),
        ("exporter", "jaeger", "must be one of"),
        ("public_endpoint", "yes", "expected true or false"),
        ("correlation_headers", 7, "expected a list"),
        ("response_header", "X-Request-ID\n", "not a valid HTTP header name"),
    ],
)
def test_a_bad_keyword_names_the_keyword_and_its_variable(option: str, value: object, says: str):
    with pytest.raises(ConfigError) as refused:
        config.resolve(environ={}, **{option: value})

    assert str(refused.value).startswith(f"{option} ({config.env_var(option)}): ")
    assert says in str(refused.value)


def test_good_values_pass_and_a_string_is_one_expression() -> None:
    options = config.resolve(
        environ={"TRACEKIT_METRICS_PORT": "0", "TRACEKIT_INSTRUMENT": "requests, httpx"},
        excluded_urls="^/health$",
        correlation_headers=["X-Request-ID"],
    )
    assert options.metrics_port == 0
    assert options.instrument == ("requests", "httpx")
    assert options.excluded_urls == ("^/health$",)
    assert options.correlation_headers == ("X-Request-ID",)


def test_middleware_overrides_are_checked_too() -> None:
    from tracekit.asgi import TracekitMiddleware

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    with pytest.raises(ConfigError, match=r"^excluded_urls \(TRACEKIT_EXCLUDED_URLS\): "):
        TracekitMiddleware(app, excluded_urls=["[unclosed"])


def test_init_fails_at_start_in_a_real_process() -> None:
    """What a user sees: the application does not start, and the message names the variable."""
    env = {**os.environ, "TRACEKIT_EXCLUDED_URLS": "(", "TRACEKIT_EXPORTER": "none"}
    result = subprocess.run(
        [sys.executable, "-c", "import tracekit; tracekit.init('svc'); print('started')"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "started" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tracekit.config.ConfigError: TRACEKIT_EXCLUDED_URLS: "), last


def test_a_store_path_longer_than_256_characters_is_written(tmp_path: Path) -> None:
    """TRACEKIT_STORE was held to 256 characters like a name: a service under a deep folder (a
    CI workspace) did not start, and `tracekit demo --store` there failed with "demo service
    gateway exited; see .../gateway.log" (the collector and the CLI took the same path)."""
    store = tmp_path / ("d" * 120) / ("e" * 120) / "tracekit.db"
    store.parent.mkdir(parents=True)
    env = {**os.environ, "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store),
           "TRACEKIT_METRICS_PORT": "0", "TRACEKIT_EXPORT_LOGS": "false"}  # fmt: skip
    code = (
        "import tracekit; tracekit.init('svc'); from opentelemetry import trace; "
        "trace.get_tracer('t').start_span('hello').end(); tracekit.shutdown()"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert len(str(store)) > 256 and result.returncode == 0, result.stderr
    with Store(store) as stored:
        assert [s.name for s in stored.spans_since(0)] == ["hello"]


def test_service_name_is_the_same_for_spans_and_metrics_when_nobody_names_it() -> None:
    options = config.resolve(environ={})
    assert options.service_name == config.default_service_name()
    assert options.service_name == f"unknown_service:{os.path.basename(sys.executable)}"
    from opentelemetry.sdk.resources import Resource

    assert Resource.create({}).attributes["service.name"] == options.service_name


def test_service_name_from_otel_resource_attributes() -> None:
    environ = {"OTEL_RESOURCE_ATTRIBUTES": "team=a,service.name=billing%20api"}
    assert config.resolve(environ=environ).service_name == "billing api"
    both = {**environ, "OTEL_SERVICE_NAME": "billing"}
    assert config.resolve(environ=both).service_name == "billing"


def test_a_comma_inside_an_excluded_url_expression_stays_in_it() -> None:
    """Split at that comma, ``^/v[0-9]{1,2}/health$`` was two expressions that both compiled
    and excluded nothing: the health checks were traced and measured, silently."""
    environ = {"TRACEKIT_EXCLUDED_URLS": "^/v[0-9]{1,2}/health$, ^/(ready|live)$,^/[,;]x$"}

    options = config.resolve(environ=environ)

    assert options.excluded_urls == ("^/v[0-9]{1,2}/health$", "^/(ready|live)$", "^/[,;]x$")
    excluded = config.compile_excluded(options.excluded_urls)
    assert excluded is not None
    assert [bool(excluded.search(p)) for p in ("/v12/health", "/live", "/,x", "/v1/orders")] == [
        True, True, True, False,
    ]  # fmt: skip


def test_spaces_around_a_name_from_the_environment_are_not_part_of_it() -> None:
    """An env file's ``TRACEKIT_SERVICE_NAME=orders `` (``docker stack deploy`` keeps the space)
    named spans and labelled every metric ``service_name="orders "``: a dashboard's
    ``service_name="orders"`` and ``tracekit canary --service orders`` found nothing, while
    ``OTEL_SERVICE_NAME=orders `` gave ``orders``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRACEKIT_")}
    env.update({"TRACEKIT_SERVICE_NAME": "orders ", "TRACEKIT_SERVICE_VERSION": " 1.4.2\t",
                "TRACEKIT_ENVIRONMENT": "prod ", "TRACEKIT_EXPORTER": "none",
                "TRACEKIT_METRICS_PORT": "0", "TRACEKIT_EXPORT_LOGS": "false"})  # fmt: skip
    code = (
        "import tracekit; tracekit.init(); from tracekit import messaging\n"
        "with messaging.publish({}, system='rabbitmq', destination='q'): pass\n"
        "from opentelemetry import trace; from prometheus_client import generate_latest\n"
        "print(dict(trace.get_tracer_provider().resource.attributes))\n"
        "print(generate_latest().decode())"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    resource, scrape = result.stdout.split("\n", 1)
    assert "'service.name': 'orders'" in resource and "'service.version': '1.4.2'" in resource
    assert "'deployment.environment.name': 'prod'" in resource
    sent = [line for line in scrape.splitlines() if line.startswith("messaging_client_sent")]
    assert sent and all('service_name="orders",service_version="1.4.2"' in s for s in sent), sent


def test_spaces_around_the_correlation_property_are_not_part_of_it() -> None:
    options = config.resolve(environ={"TRACEKIT_MESSAGE_CORRELATION_PROPERTY": "app_id "})
    assert options.message_correlation_property == "app_id"
