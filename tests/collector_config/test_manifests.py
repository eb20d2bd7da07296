"""The ECS task definition and the Kubernetes manifests wire app and sidecar consistently."""

from __future__ import annotations

import yaml

from tracekit.config import resolve

from . import tracekit_defaults as tk
from .manifests import (
    ecs_container,
    ecs_env,
    ecs_task,
    k8s_container,
    k8s_documents,
    k8s_env,
    k8s_object,
    k8s_ports,
    pod_spec,
)
from .otelcol import CONFIG_DIR, Config, env_defaults, load, port_of, used, with_defaults

SSM_STANDARD_TIER_LIMIT = 4096


def health_port(config: Config) -> int:
    return port_of(config["extensions"]["health_check"]["endpoint"])


def queue_dir(config: Config) -> str:
    return with_defaults(config["extensions"]["file_storage/queue"]["directory"])


def required_variables(config: Config) -> set[str]:
    return {name for name, defaults in env_defaults(config).items() if None in defaults}


def sidecar_scrapes_loopback(config: Config) -> bool:
    """Whether the sidecar scrapes the app's metrics port on the task's or pod's loopback."""
    (job,) = [
        job
        for job in config["receivers"]["prometheus"]["config"]["scrape_configs"]
        if job["job_name"] != "otelcol"
    ]
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    return with_defaults(target) == f"localhost:{tk.METRICS_PORT}"


def metrics_host(app_env: dict[str, str]) -> str:
    """The address tracekit binds the metrics port to with the app's environment."""
    return resolve(environ=app_env).metrics_host


# --- ECS ---------------------------------------------------------------------------------------


def ecs_config() -> tuple[str, Config]:
    """The config the ECS sidecar loads, found through the SSM parameter the task names."""
    (secret,) = ecs_container("otel-collector")["secrets"]
    assert secret["name"] == "AOT_CONFIG_CONTENT"
    file_name = secret["valueFrom"].rsplit("/", 1)[-1]
    return file_name, load(CONFIG_DIR / file_name)


def test_ecs_config_parameter_names_a_real_file_that_fits_ssm() -> None:
    file_name, _ = ecs_config()
    assert (CONFIG_DIR / file_name).stat().st_size <= SSM_STANDARD_TIER_LIMIT


def test_ecs_app_exports_to_the_sidecar() -> None:
    _, config = ecs_config()
    app_env = ecs_env(ecs_container("app"))
    assert app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == tk.APP_OTLP_ENDPOINT
    assert app_env["TRACEKIT_EXPORTER"] == "otlp"
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert port_of(http) == tk.OTLP_HTTP_PORT
    # The task's localhost, not a published port: the receivers listen on loopback only.
    assert "portMappings" not in ecs_container("otel-collector")


def test_ecs_metrics_port_is_the_same_on_both_sides() -> None:
    app = ecs_env(ecs_container("app"))[tk.METRICS_PORT_ENV]
    collector = ecs_env(ecs_container("otel-collector"))[tk.METRICS_PORT_ENV]
    assert app == collector == str(tk.METRICS_PORT)


def test_ecs_metrics_port_is_reached_by_the_sidecar_only() -> None:
    """The sidecar scrapes the task's localhost. Bound to every interface (tracekit's default),
    the port took connections from anything reaching the task's IP, and 16 held open and idle
    (the server's cap) made every one of the sidecar's scrapes fail: a gap in the metrics."""
    _, config = ecs_config()
    assert sidecar_scrapes_loopback(config)
    assert metrics_host(ecs_env(ecs_container("app"))) == "127.0.0.1"


def test_ecs_app_waits_for_a_healthy_sidecar() -> None:
    _, config = ecs_config()
    assert {"containerName": "otel-collector", "condition": "HEALTHY"} in ecs_container("app")[
        "dependsOn"
    ]
    collector = ecs_container("otel-collector")
    assert collector["healthCheck"]["command"] == ["CMD", "/healthcheck"]
    # ADOT's /healthcheck probes the health_check extension on its default port.
    assert health_port(config) == 13133


def test_ecs_app_runs_under_an_init() -> None:
    """Without one, an app image whose command is a plain worker is its container's PID 1, which
    SIGTERM's default action does not end (tests/lifecycle/test_pid_one.py): ECS's stop took
    its whole stopTimeout, ending in a SIGKILL."""
    assert ecs_container("app")["linuxParameters"]["initProcessEnabled"] is True


def test_ecs_queue_volume_is_mounted_where_the_config_writes() -> None:
    _, config = ecs_config()
    volumes = {v["name"] for v in ecs_task()["volumes"]}
    for name in ("otel-collector", "otelcol-queue-init"):
        (mount,) = ecs_container(name)["mountPoints"]
        assert mount["sourceVolume"] in volumes
        assert mount["containerPath"] == queue_dir(config)
    assert ecs_env(ecs_container("otel-collector"))["TRACEKIT_OTELCOL_QUEUE_DIR"] == queue_dir(
        config
    )
    init = {"containerName": "otelcol-queue-init", "condition": "SUCCESS"}
    assert init in ecs_container("otel-collector")["dependsOn"]
    assert ecs_container("otelcol-queue-init")["essential"] is False


def test_ecs_sets_every_required_variable() -> None:
    _, config = ecs_config()
    assert required_variables(config) <= set(ecs_env(ecs_container("otel-collector")))


# --- Kubernetes ---------------------------------------------------------------------------------


def k8s_config() -> tuple[str, Config]:
    """The config the pod's sidecar loads: its --config path, through the ConfigMap mount."""
    collector = k8s_container("otel-collector")
    (arg,) = [a for a in collector["args"] if a.startswith("--config=")]
    path = arg.removeprefix("--config=")
    mount_dir, file_name = path.rsplit("/", 1)
    (mount,) = [m for m in collector["volumeMounts"] if m["mountPath"] == mount_dir]
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    configmap = k8s_object("ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert {"key": file_name, "path": file_name} in volume["configMap"]["items"]
    return file_name, yaml.safe_load(configmap["data"][file_name])


def test_k8s_configmap_is_the_config_file_verbatim() -> None:
    file_name, _ = k8s_config()
    data = k8s_object("ConfigMap")["data"][file_name]
    assert data == (CONFIG_DIR / file_name).read_text(encoding="utf-8")


def test_k8s_sidecar_is_native_and_probed_on_the_health_port() -> None:
    _, config = k8s_config()
    collector = k8s_container("otel-collector")
    assert collector["restartPolicy"] == "Always"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert collector[probe]["httpGet"]["port"] == health_port(config)
    assert health_port(config) in k8s_ports(collector)


def test_k8s_app_exports_to_the_sidecar() -> None:
    _, config = k8s_config()
    app_env = k8s_env(k8s_container("app"))
    assert app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == tk.APP_OTLP_ENDPOINT
    protocols = config["receivers"]["otlp"]["protocols"]
    assert {port_of(p["endpoint"]) for p in protocols.values()} == {
        tk.OTLP_GRPC_PORT,
        tk.OTLP_HTTP_PORT,
    }
    # The pod's localhost, not a declared port: the receivers listen on loopback only.
    assert k8s_ports(k8s_container("otel-collector")) == {health_port(config)}


def test_k8s_metrics_port_is_the_same_on_both_sides() -> None:
    app = k8s_env(k8s_container("app"))[tk.METRICS_PORT_ENV]
    collector = k8s_env(k8s_container("otel-collector"))[tk.METRICS_PORT_ENV]
    assert app == collector == str(tk.METRICS_PORT)


def test_k8s_metrics_port_is_reached_by_the_sidecar_only() -> None:
    """As on ECS: the port on the pod's IP let any pod of the cluster hold its 16 connections
    and fail the sidecar's scrapes of localhost."""
    _, config = k8s_config()
    assert sidecar_scrapes_loopback(config)
    assert metrics_host(k8s_env(k8s_container("app"))) == "127.0.0.1"


def test_k8s_queue_volume_is_mounted_where_the_config_writes() -> None:
    _, config = k8s_config()
    mounts = {m["mountPath"]: m["name"] for m in k8s_container("otel-collector")["volumeMounts"]}
    volume_name = mounts[queue_dir(config)]
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == volume_name]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume


def test_k8s_sets_every_required_variable() -> None:
    _, config = k8s_config()
    assert required_variables(config) <= set(k8s_env(k8s_container("otel-collector")))


def test_both_manifests_name_the_same_service() -> None:
    ecs_names = {ecs_env(ecs_container(c))["OTEL_SERVICE_NAME"] for c in ("app", "otel-collector")}
    k8s_names = {k8s_env(k8s_container(c))["OTEL_SERVICE_NAME"] for c in ("app", "otel-collector")}
    assert len(ecs_names) == 1
    assert len(k8s_names) == 1


# --- memory -------------------------------------------------------------------------------------


def mebibytes(quantity: str, suffix: str) -> float:
    """``409MiB`` (Go) or ``512Mi`` (Kubernetes) in MiB; only the MiB forms the manifests use."""
    assert quantity.endswith(suffix), quantity
    return float(quantity.removesuffix(suffix))


def assert_go_soft_limit_meets_the_limiter(config: Config, gomemlimit: str, limit: float) -> None:
    """The Go runtime collects hard from memory_limiter's soft limit up to its hard limit: with
    no GOMEMLIMIT it let the heap double between two GCs, past the container's limit (OOM kill)
    before the limiter's once-a-second check saw it."""
    limiter = config["processors"]["memory_limiter"]
    hard = limit * limiter["limit_percentage"] / 100
    soft = hard - limit * limiter["spike_limit_percentage"] / 100
    assert soft <= mebibytes(gomemlimit, "MiB") <= hard


def test_ecs_collector_has_a_go_soft_memory_limit() -> None:
    _, config = ecs_config()
    collector = ecs_container("otel-collector")
    gomemlimit = ecs_env(collector).get("GOMEMLIMIT", "unset")
    assert_go_soft_limit_meets_the_limiter(config, gomemlimit, float(collector["memory"]))


def test_k8s_collector_has_a_go_soft_memory_limit() -> None:
    _, config = k8s_config()
    collector = k8s_container("otel-collector")
    gomemlimit = k8s_env(collector).get("GOMEMLIMIT", "unset")
    limit = mebibytes(collector["resources"]["limits"]["memory"], "Mi")
    assert_go_soft_limit_meets_the_limiter(config, gomemlimit, limit)


# --- disk ---------------------------------------------------------------------------------------

BYTE_UNITS = {"Mi": 2**20, "Gi": 2**30}


def disk_bound(config: Config) -> int | None:
    """Most bytes the collector's buffers can hold on disk, or None if one has no byte bound.
    file_storage's compaction copies a queue's database beside it: each counts twice."""
    total = 0
    for cid in used(config, "exporters"):
        settings = config["exporters"][cid] or {}
        if "wal" in settings:  # remote write's write-ahead log grows through an outage unbounded
            return None
        queue = settings.get("sending_queue") or {}
        if queue.get("storage"):
            if queue.get("sizer") != "bytes":
                return None  # counted in batches: a batch has no size bound
            total += 2 * int(queue["queue_size"])
    return total


def test_k8s_sidecar_buffers_cannot_overflow_their_volume() -> None:
    """An emptyDir past its sizeLimit makes the kubelet evict the pod, the app with it: a backend
    outage long enough would restart every replica of the service, over and over. The sidecar's
    disk buffers are bounded in bytes to fit the volume."""
    _, config = k8s_config()
    mounts = {m["mountPath"]: m["name"] for m in k8s_container("otel-collector")["volumeMounts"]}
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mounts[queue_dir(config)]]
    size_limit = volume["emptyDir"]["sizeLimit"]
    limit = int(size_limit[:-2]) * BYTE_UNITS[size_limit[-2:]]
    bound = disk_bound(config)
    assert bound is not None and bound <= limit, (bound, limit)


def test_ecs_app_outlives_a_collector_crash() -> None:
    """An essential container that stops takes its whole task down: a collector killed by a
    burst or a bad deploy stopped the app, its requests in flight with it. The collector is not
    essential and ECS restarts it in place, once it has run a minute (the app keeps serving; its
    exports fail quietly)."""
    collector = ecs_container("otel-collector")
    assert collector["essential"] is False
    assert collector["restartPolicy"]["enabled"] is True
    assert ecs_container("app")["essential"] is True


def test_ecs_readme_says_which_collector_exits_are_not_restarted() -> None:
    """ECS restarts a container only once it has run ``restartAttemptPeriod`` seconds (60 to
    1800; 300 when unset): one that exits sooner is not restarted. The README said a collector
    that crashes "is restarted in place"; one that died within a minute of its start stayed
    stopped, and the task served on with its telemetry lost."""
    period = ecs_container("otel-collector")["restartPolicy"]["restartAttemptPeriod"]
    assert 60 <= period <= 1800
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    ecs = " ".join(readme.split("**ECS (Fargate)")[1].split("**Kubernetes")[0].split())
    assert f"only if it had run for {period} s (`restartAttemptPeriod`" in ecs
    assert "ECS does not restart a container that exits sooner after it started" in ecs


def _reads_configmaps_in_kube_system() -> bool:
    """Whether k8s/ grants anything the right to read ConfigMaps in kube-system."""
    rules = [
        rule
        for document in k8s_documents()
        if document["kind"] in ("Role", "ClusterRole")
        for rule in document.get("rules", [])
    ]
    return any("configmaps" in r.get("resources", []) and "get" in r.get("verbs", [])
               for r in rules)  # fmt: skip


def test_k8s_sidecar_runs_no_detector_its_pod_may_not_use() -> None:
    """The eks resource detector decides by reading the kube-system/aws-auth ConfigMap through
    the Kubernetes API. The pod's service account may not (k8s/ grants no RBAC), so on every
    cluster, EKS included, it failed at each start ('configmaps "aws-auth" is forbidden') and
    detected nothing. The pod's identity comes from OTEL_RESOURCE_ATTRIBUTES (env detector)."""
    _, config = k8s_config()
    detectors = [
        detector
        for name in used(config, "processors")
        if name.split("/")[0] == "resourcedetection"
        for detector in config["processors"][name]["detectors"]
    ]
    assert "env" in detectors
    assert "eks" not in detectors or _reads_configmaps_in_kube_system()


def test_ecs_containers_log_into_a_group_that_is_created_when_missing() -> None:
    """The awslogs driver writes into an existing log group only: a task registered as the
    README says stopped at start ('The specified log group does not exist') until someone
    created /ecs/orders by hand, which the README did not say. Each container now lets the
    driver create it, and the README names the execution role's permission for that."""
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    for container in ecs_task()["containerDefinitions"]:
        logging = container["logConfiguration"]
        assert logging["logDriver"] == "awslogs"
        assert logging["options"].get("awslogs-create-group") == "true", container["name"]
    assert "logs:CreateLogGroup" in readme.split("**ECS (Fargate)")[1].split("**Kubernetes")[0]


def test_readme_says_what_the_disk_queues_lose() -> None:
    """The persistent queue is not sent on shutdown (the collector leaves it on disk for its next
    start) and a sender gives a request up after ``max_elapsed_time``. The README said a backend
    outage or a collector restart "loses nothing that fits on the volume", where the queue on an
    emptyDir or a task volume goes with every pod or task that ends: a rollout during an outage
    lost the backlog."""
    _, config = k8s_config()
    mounts = {m["mountPath"]: m["name"] for m in k8s_container("otel-collector")["volumeMounts"]}
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mounts[queue_dir(config)]]
    exporters = [config["exporters"][cid] for cid in used(config, "exporters")]
    queued = [e for e in exporters if (e.get("sending_queue") or {}).get("storage")]
    assert {e["retry_on_failure"]["max_elapsed_time"] for e in queued} == {"10m"}
    assert not any("num_consumers" in e["sending_queue"] for e in queued)  # 10, as documented
    readme = " ".join((CONFIG_DIR / "README.md").read_text(encoding="utf-8").split())
    assert "loses nothing" not in readme
    assert "retried for `max_elapsed_time` (10m in the sidecars) and then dropped" in readme
    assert "The queue is not sent on shutdown" in readme
    if "emptyDir" in volume:
        assert "the volume goes with its pod or task" in readme


def test_readme_names_the_aws_exporters_that_keep_their_queue_on_disk() -> None:
    """The README said that beside X-Ray "the other two exporters persist like the Grafana
    flavour": Amazon Managed Prometheus's remote write keeps nothing on disk (no sending queue
    storage, no write-ahead log), so metrics of an outage are held in memory only."""
    _, config = ecs_config()
    persisted = {
        cid
        for cid in used(config, "exporters")
        if ((config["exporters"][cid] or {}).get("sending_queue") or {}).get("storage")
    }
    assert persisted == {"awscloudwatchlogs"}
    readme = " ".join((CONFIG_DIR / "README.md").read_text(encoding="utf-8").split())
    assert "the other two exporters persist" not in readme
    assert "`awscloudwatchlogs` keeps its queue on the task volume" in readme
    assert (
        "`prometheusremotewrite/amp`, like remote write to Prometheus, keeps no write-ahead"
        in readme
    )
