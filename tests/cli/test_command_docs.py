"""Every ``tracekit`` command has help text and a section in docs/cli.md that names its options."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tracekit_cli.main import COMMANDS, cli

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
SHARED = {"--store", "--tempo", "--jaeger", "--header", "--timeout", "--format"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_has_help_and_documentation(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    description = result.output.split("\n\n")[1].strip()
    assert len(description) > 20, f"{name} needs a one-line description"
    assert f"## `tracekit {name}" in DOCS, f"docs/cli.md has no section for {name}"


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


def test_top_level_help_summarises_each_command_in_a_whole_sentence() -> None:
    """`tracekit --help` cut every summary short (`demo  Run gateway, orders, inventory,
    workers and pricing...`): the first words of the description, not a summary."""
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)

    rows = result.output.split("Commands:\n")[1].split("\n\n")[0].splitlines()
    summaries = {row.split()[0]: row.split(None, 1)[1] for row in rows if row.strip()}
    assert sorted(summaries) == sorted(COMMANDS)  # one line each: nothing wrapped
    cut = {name: text for name, text in summaries.items() if "..." in text}
    assert not cut, cut
    assert all(text.endswith(".") for text in summaries.values()), summaries


def test_top_level_help_tells_a_newcomer_to_start_with_the_demo() -> None:
    """`tracekit --help` listed seven commands and no word on which to run first."""
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)

    after_the_commands = " ".join(result.output.split("Commands:\n")[1].split("\n\n")[1:])
    assert "Start with 'tracekit demo'" in " ".join(after_the_commands.split())


def section(heading: str) -> str:
    """docs/cli.md from the heading that starts with ``heading`` to the next ``## `` heading."""
    start = DOCS.index(f"\n## {heading}")
    end = DOCS.find("\n## ", start + 1)
    return DOCS[start : end if end > 0 else len(DOCS)]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_named_in_its_section(name: str) -> None:
    """``services --service`` was in ``--help`` but nowhere in docs/cli.md."""
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    own, shared = section(f"`tracekit {name}"), section("Backends and shared options")
    options = [p for p in command.params if isinstance(p, click.Option)]
    flags = [[f for f in (*o.opts, *o.secondary_opts) if f.startswith("--")] for o in options]
    missing = [
        pair[0] for pair in flags
        if not any(named(flag, shared if flag in SHARED else own) for flag in pair)
    ]  # fmt: skip
    assert not missing, f"docs/cli.md's {name} section does not name {missing}"


def named(flag: str, text: str) -> bool:
    """``flag`` in ``text`` as a whole option (``--since`` is not ``--since-x``)."""
    return re.search(re.escape(flag) + r"(?![\w-])", text) is not None


README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_cli_page_and_the_readme_name_every_command() -> None:
    """The page's title and the README's link to it named trace, search, services, collector and
    demo: a reader of either never learnt that `diff` and `canary` exist."""
    title = DOCS.splitlines()[0]
    (link,) = re.findall(r"\[(The CLI: [^\]]*)\]\(docs/cli\.md\)", README)
    for where, text in (("docs/cli.md's title", title), ("the README's link to it", link)):
        missing = [name for name in sorted(COMMANDS) if not re.search(rf"\b{name}\b", text)]
        assert not missing, f"{where} does not name {missing}: {text!r}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_store_reads_the_same_in_every_help(name: str) -> None:
    """docs/cli.md and docs/store.md write `--store PATH` for every command; the collector's and
    the demo's help said `--store FILE`."""
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    store = [p for p in command.params if p.name in ("store", "store_path")]
    if store:
        (option,) = store
        record = option.get_help_record(click.Context(command))
        assert record is not None and record[0] == "--store PATH"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_defaults_read_the_same_in_every_help(name: str) -> None:
    """Every default is in click's brackets, `[default: …]`, one bracket to an option; the
    collector's `--retention` said `(default: keep everything)`, its `--max-size` named no default
    at all, and its `--grpc-port` read `[default: 4317; 0 turns gRPC off].  [0<=x<=65535]`."""
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    records = {option.name: option.get_help_record(click.Context(command))
               for option in command.params if isinstance(option, click.Option)}  # fmt: skip
    helps = {name: record[1] for name, record in records.items() if record is not None}
    assert not [text for text in helps.values() if "(default" in text.lower()], helps
    assert not [text for text in helps.values() if "]  [" in text], helps
    if name == "collector":
        assert helps["grpc_port"].endswith("  [default: 4317; 0<=x<=65535]")
        assert "[default: keep everything]" in helps["max_age"]
        assert "[default: no limit]" in helps["max_size"]
