"""Every sidecar scrapes ``localhost``, so every task's series would carry the same ``instance``
label: the collector-health dashboard's per-instance panels (queue size, memory, CPU) and its
``$instance`` picker would show one line for the whole fleet.

The collector binary cannot run here; its ``prometheus`` receiver applies scrape configs with
Prometheus' own scrape library and makes the target's ``instance`` label the series'
``service.instance.id``, which remote write turns back into ``instance``. So the sidecars'
scrape configs, placeholders expanded as the collector expands them, go to a real Prometheus,
whose target list shows the labels that relabeling leaves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conditions import wait_for
from prometheus_server import api, prometheus_binary, prometheus_configured

from .otelcol import CONFIG_DIR, with_defaults
from .test_consistency import SIDECARS


def _instances(tmp_path: Path, sidecar: str, environ: dict[str, str]) -> dict[str, str]:
    """job -> instance label of each target the sidecar's scrape configs define."""
    receiver = yaml.safe_load(with_defaults((CONFIG_DIR / sidecar).read_text(), environ))
    config: dict[str, Any] = {"scrape_configs": receiver["receivers"]["prometheus"]["config"][
        "scrape_configs"
    ]}  # fmt: skip
    jobs = len(config["scrape_configs"])
    with prometheus_configured(prometheus_binary(), tmp_path, yaml.safe_dump(config)) as url:
        # targets appear once discovery has run, shortly after Prometheus says it is ready
        wait_for(lambda: len(api(url, "targets")["activeTargets"]) == jobs, 20, "targets listed")
        targets = api(url, "targets")["activeTargets"]
    return {t["labels"]["job"]: t["labels"]["instance"] for t in targets}


@pytest.mark.parametrize("sidecar", SIDECARS)
def test_each_sidecar_names_its_scrapes_after_its_task_or_pod(tmp_path: Path, sidecar: str) -> None:
    # Kubernetes sets HOSTNAME to the pod's name; Docker and ECS to the container's host name
    instances = _instances(tmp_path, sidecar, {"HOSTNAME": "orders-7d9f-x2k4q"})

    assert instances == {"tracekit-service": "orders-7d9f-x2k4q", "otelcol": "orders-7d9f-x2k4q"}


@pytest.mark.parametrize("sidecar", SIDECARS)
def test_without_a_host_name_the_instance_is_the_scraped_address(
    tmp_path: Path, sidecar: str
) -> None:
    instances = _instances(tmp_path, sidecar, {})

    assert instances == {"tracekit-service": "localhost:9464", "otelcol": "localhost:8888"}


@pytest.mark.parametrize("gateway", ["gateway.yaml", "gateway-sampling.yaml"])
@pytest.mark.parametrize("environ", [{"HOSTNAME": "otelcol-gateway-0"}, {}])
def test_each_gateway_names_its_scrape_of_itself_after_its_pod(
    tmp_path: Path, gateway: str, environ: dict[str, str]
) -> None:
    # every instance serves its own telemetry: its series must stay apart
    instances = _instances(tmp_path, gateway, environ)

    assert instances == {"otelcol": environ.get("HOSTNAME", "localhost:8888")}
