"""docs/configuration.md documents every option, its variable and its default."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from tracekit import config

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def test_every_option_has_a_documented_variable() -> None:
    rows = [line for line in DOC.splitlines() if line.startswith("| `")]
    for option in fields(config.Options):
        row = [r for r in rows if r.startswith(f"| `{option.name}` |")]
        assert row, f"{option.name} missing from docs/configuration.md"
        assert f"`{config.env_var(option.name)}`" in row[0]


def test_environment_variables_are_read() -> None:
    environ = {config.env_var("public_endpoint"): "yes", config.env_var("excluded_urls"): "a, b"}
    options = config.resolve(environ=environ)
    assert options.public_endpoint is True
    assert options.excluded_urls == ("a", "b")


def test_the_instrument_row_names_every_instrumentation() -> None:
    """The row said `requests`, `httpx`, `urllib3`, `aiohttp`, "queue libraries": whether
    aio-pika was `aio_pika`, `aio-pika` or `aiopika`, and SQS `botocore` or `boto3`, a user
    learned from the ConfigError."""
    from tracekit.instrumentation import INSTRUMENTORS

    (row,) = [line for line in DOC.splitlines() if line.startswith("| `instrument` |")]
    missing = [name for name in sorted(INSTRUMENTORS) if f"`{name}`" not in row]
    assert not missing, missing
