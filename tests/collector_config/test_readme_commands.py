"""The commands collector-config/README.md gives, run as written where their tools are here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from conditions import need

from .otelcol import CONFIG_DIR, component_type, parse, with_defaults

README = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")


def _regeneration_command() -> str:
    """The README's shell lines that regenerate k8s/configmap.yaml (everything but the apply)."""
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if "configmap" in b]
    return "\n".join(line for line in block.splitlines() if "kubectl apply" not in line)


def test_the_configmap_regeneration_writes_an_edited_sidecar_config(tmp_path: Path) -> None:
    """The README's command printed the ConfigMap and wrote nothing: `kubectl apply` after it
    deployed the config as it was before the edit."""
    need(shutil.which("kubectl") is not None, "kubectl (the machine's Debian package)")
    shutil.copytree(CONFIG_DIR, tmp_path / "collector-config")
    edited = (tmp_path / "collector-config" / "sidecar.yaml").read_text(encoding="utf-8")
    edited += "# edited\n"
    (tmp_path / "collector-config" / "sidecar.yaml").write_text(edited, encoding="utf-8")
    subprocess.run(["sh", "-ec", _regeneration_command()], cwd=tmp_path, check=True, timeout=60)
    written = (tmp_path / "collector-config" / "k8s" / "configmap.yaml").read_text()
    configmap = yaml.safe_load(written)
    assert configmap["data"]["sidecar.yaml"] == edited
    shipped = yaml.safe_load((CONFIG_DIR / "k8s" / "configmap.yaml").read_text())
    assert configmap["metadata"]["labels"] == shipped["metadata"]["labels"]


def _validate_commands() -> list[str]:
    """Every command of the README's shell blocks that asks a collector to `validate`, with its
    continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines()]
    return [c for c in commands if " validate " in f" {c} " and not c.lstrip().startswith("#")]


def _runs_otelcol_contrib(command: str) -> bool:
    """The otelcol-contrib binary, or its image, and not the AWS Distro's."""
    contrib = "otelcol-contrib" in command or "opentelemetry-collector-contrib" in command
    return contrib and "aws-otel-collector" not in command


def test_every_validate_command_runs_a_collector_that_has_the_command() -> None:
    """The AWS flavour was to be checked with `aws-otel-collector:v0.43.3 validate --config=…`.
    The AWS Distro's command has no subcommands (cmd/awscollector/main.go builds one cobra
    command whose flags Go's flag package parses first, stopping at `validate`): it read no
    config and stopped with `invalid 'confmap.ResolverSettings' configuration: no URIs`, having
    checked nothing. otelcol-contrib, binary or image, has `validate`."""
    commands = _validate_commands()
    assert len(commands) >= 3, commands
    without = [c for c in commands if not _runs_otelcol_contrib(c)]
    assert not without, f"validate run by a collector that has no such command: {without}"
    checked = {name for c in commands for name in re.findall(r"[\w-]+\.yaml", c)}
    assert "sidecar-aws.yaml" in checked, checked


def _queue_directories(name: str) -> set[str]:
    """The directories a config's file_storage extensions name, as shipped: `validate` stats
    each one (the extension's Validate) and refuses the config when one does not exist."""
    config = parse(with_defaults((CONFIG_DIR / name).read_text(encoding="utf-8")), name)
    storages = [c for cid, c in config.get("extensions", {}).items()
                if component_type(cid) == "file_storage"]  # fmt: skip
    named = [(s["directory"], (s.get("compaction") or {}).get("directory")) for s in storages]
    return {directory for pair in named for directory in pair if directory}


def test_every_validate_command_gives_the_queue_directory_that_must_exist() -> None:
    """`otel/opentelemetry-collector-contrib:0.162.0 validate --config=/cfg/gateway-sampling.yaml`
    as written stopped at `extensions::file_storage/queue: directory must exist: stat
    /var/lib/otelcol/queue: no such file or directory`: the image is built from scratch and the
    queue's volume is mounted only where the collector runs. So did the three validations of
    configs with a persistent queue on a machine without that folder."""
    missing = [
        (name, directory)
        for command in _validate_commands()
        for name in re.findall(r"[\w-]+\.yaml", command)
        for directory in _queue_directories(name)
        if f"--tmpfs {directory}" not in command and "TRACEKIT_OTELCOL_QUEUE_DIR=" not in command
    ]
    assert not missing, f"validate without the queue directory the config needs: {missing}"
