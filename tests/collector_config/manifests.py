"""Read the ECS task definition and the Kubernetes manifests into plain Python."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .otelcol import CONFIG_DIR

ECS_TASK = CONFIG_DIR / "ecs" / "task-definition.json"
K8S_DIR = CONFIG_DIR / "k8s"


def ecs_task() -> dict[str, Any]:
    """The ECS task definition."""
    task: dict[str, Any] = json.loads(ECS_TASK.read_text(encoding="utf-8"))
    return task


def ecs_container(name: str) -> dict[str, Any]:
    """One container definition of the task, by name."""
    return next(c for c in ecs_task()["containerDefinitions"] if c["name"] == name)


def ecs_env(container: dict[str, Any]) -> dict[str, str]:
    """A container definition's environment as a mapping."""
    return {item["name"]: item["value"] for item in container.get("environment", [])}


def k8s_documents() -> list[dict[str, Any]]:
    """Every document of every manifest in k8s/."""
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def k8s_object(kind: str) -> dict[str, Any]:
    """The single object of a kind."""
    (found,) = [d for d in k8s_documents() if d["kind"] == kind]
    return dict(found)


def pod_spec() -> dict[str, Any]:
    """The Deployment's pod template spec."""
    spec: dict[str, Any] = k8s_object("Deployment")["spec"]["template"]["spec"]
    return spec


def k8s_container(name: str) -> dict[str, Any]:
    """A container or init container of the pod, by name."""
    spec = pod_spec()
    everything = spec.get("initContainers", []) + spec["containers"]
    return next(c for c in everything if c["name"] == name)


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """Literal env values of a container (downward-API entries are left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def k8s_ports(container: dict[str, Any]) -> set[int]:
    """The container's declared ports."""
    return {p["containerPort"] for p in container.get("ports", [])}
