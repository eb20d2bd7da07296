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

from typing import Any

import pytest
import yaml
from conditions import wait_for
from prometheus_server import api, prometheus_binary, prometheus_configured

from .otelcol import CONFIG_DIR, with_defaults
from .test_consistency import SIDECARS

HOST = {"HOSTNAME": "orders-7d9f-x2k4q"}  # Kubernetes: the pod's name; Docker, ECS: the host's
GATEWAY_HOST = {"HOSTNAME": "otelcol-gateway-0"}
GATEWAYS = ("gateway.yaml", "gateway-sampling.yaml")
# (config, environment) of every case below, all scraped by one Prometheus
CASES = [
    *((sidecar, environ) for sidecar in SIDECARS for environ in (HOST, {})),
    *((gateway, environ) for gateway in GATEWAYS for environ in (GATEWAY_HOST, {})),
]


def _scrape_configs(config: str, environ: dict[str, str]) -> list[dict[str, Any]]:
    """The config's scrape configs, placeholders expanded with ``environ``."""
    receiver = yaml.safe_load(with_defaults((CONFIG_DIR / config).read_text(), environ))
    configs: list[dict[str, Any]] = receiver["receivers"]["prometheus"]["config"]["scrape_configs"]
    return configs


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, str]]:
    """(config, HOSTNAME or "") -> job -> instance label of each target its scrape configs define.

    One Prometheus for every case, each case's jobs renamed ``JOB@CASE`` (job names must differ
    in one config): its discovery publishes targets in 5 s ticks, which a Prometheus per case
    waited out eight times. Relabeling is per scrape config, and these set only ``instance``,
    from nothing the job's name enters, so each case's targets come out as in a config alone.
    """
    jobs = []
    for case, (config, environ) in enumerate(CASES):
        for job in _scrape_configs(config, environ):
            jobs.append({**job, "job_name": f"{job['job_name']}@{case}"})
    directory = tmp_path_factory.mktemp("scrape-instances")
    text = yaml.safe_dump({"scrape_configs": jobs})
    with prometheus_configured(prometheus_binary(), directory, text) as url:
        # targets appear once discovery has run, shortly after Prometheus says it is ready
        wait_for(lambda: len(api(url, "targets")["activeTargets"]) == len(jobs), 20, "targets")
        targets = api(url, "targets")["activeTargets"]
    found: dict[tuple[str, str], dict[str, str]] = {}
    for target in targets:
        job, case = target["labels"]["job"].rsplit("@", 1)
        config, environ = CASES[int(case)]
        found.setdefault((config, environ.get("HOSTNAME", "")), {})[job] = target["labels"][
            "instance"
        ]
    return found


@pytest.mark.parametrize("sidecar", SIDECARS)
def test_each_sidecar_names_its_scrapes_after_its_task_or_pod(
    instances: dict[tuple[str, str], dict[str, str]], sidecar: str
) -> None:
    assert instances[sidecar, HOST["HOSTNAME"]] == {
        "tracekit-service": "orders-7d9f-x2k4q",
        "otelcol": "orders-7d9f-x2k4q",
    }


@pytest.mark.parametrize("sidecar", SIDECARS)
def test_without_a_host_name_the_instance_is_the_scraped_address(
    instances: dict[tuple[str, str], dict[str, str]], sidecar: str
) -> None:
    assert instances[sidecar, ""] == {
        "tracekit-service": "localhost:9464",
        "otelcol": "localhost:8888",
    }


@pytest.mark.parametrize("gateway", GATEWAYS)
@pytest.mark.parametrize("environ", [GATEWAY_HOST, {}])
def test_each_gateway_names_its_scrape_of_itself_after_its_pod(
    instances: dict[tuple[str, str], dict[str, str]], gateway: str, environ: dict[str, str]
) -> None:
    # every instance serves its own telemetry: its series must stay apart
    assert instances[gateway, environ.get("HOSTNAME", "")] == {
        "otelcol": environ.get("HOSTNAME", "localhost:8888")
    }
