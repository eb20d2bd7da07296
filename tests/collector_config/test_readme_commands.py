"""The commands collector-config/README.md gives, run as written where their tools are here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from conditions import need

from .otelcol import CONFIG_DIR

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
