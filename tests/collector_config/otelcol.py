"""A model of the OpenTelemetry Collector's start-up checks, for testing configs as code.

The collector binary cannot run on the CI machines, so these helpers re-state the rules it
applies when it loads a config (every referenced component defined, connectors wired between
pipelines of compatible signals, extensions enabled) plus the production habits tracekit asks
of its configs. Each check returns a list of human-readable problems: empty means clean.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "collector-config"
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
SIGNALS = ("traces", "metrics", "logs", "profiles")
ID_RE = re.compile(r"[a-zA-Z][0-9a-zA-Z_]*(/[^/\s]+)?")
PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")
ENV_RE = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?")

# Which signal pairs each connector can join (exporter side, receiver side).
CONNECTOR_SIGNALS: dict[str, set[tuple[str, str]]] = {
    "spanmetrics": {("traces", "metrics")},
    "servicegraph": {("traces", "metrics")},
    "forward": {(signal, signal) for signal in SIGNALS},
}

Config = dict[str, Any]


class StrictLoader(yaml.SafeLoader):
    """Refuses duplicate keys, as the collector's YAML parser does (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = sorted({str(key) for key in keys if keys.count(key) > 1})
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key(s) {duplicates}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def parse(text: str, name: str = "<config>") -> Config:
    """Parse collector config text strictly."""
    # StrictLoader derives from SafeLoader: no arbitrary Python objects.
    document = yaml.load(text, Loader=StrictLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{name}: not a YAML mapping")
    return document


def load(path: Path) -> Config:
    """Parse one collector config file."""
    return parse(path.read_text(encoding="utf-8"), path.name)


def config_paths() -> list[Path]:
    """Every collector config in collector-config/ (manifests live in sub-folders)."""
    return sorted(CONFIG_DIR.glob("*.yaml"))


def component_type(component_id: str) -> str:
    """``otlp/tempo`` -> ``otlp``."""
    return component_id.split("/", 1)[0]


def pipelines(config: Config) -> dict[str, dict[str, list[str]]]:
    """service.pipelines, or an empty mapping."""
    return (config.get("service") or {}).get("pipelines") or {}


def signal_of(pipeline_id: str) -> str:
    """``traces/sampled`` -> ``traces``."""
    return pipeline_id.split("/", 1)[0]


def defined(config: Config, section: str) -> set[str]:
    """Component ids defined in one top-level section."""
    return set(config.get(section) or {})


def used(config: Config, role: str) -> set[str]:
    """Component ids named in one role (receivers/processors/exporters) of any pipeline."""
    return {cid for pipe in pipelines(config).values() for cid in pipe.get(role) or []}


# --- the collector's own start-up validation -------------------------------------------------


def graph_problems(config: Config) -> list[str]:
    """Everything the collector would refuse at start-up, as far as the YAML can tell."""
    return [
        *_top_level_problems(config),
        *_id_problems(config),
        *_pipeline_shape_problems(config),
        *_reference_problems(config),
        *_unused_problems(config),
        *_connector_problems(config),
        *_extension_problems(config),
    ]


def _top_level_problems(config: Config) -> list[str]:
    unknown = set(config) - {*SECTIONS, "service"}
    problems = [f"unknown top-level key {key!r}" for key in sorted(unknown)]
    if not pipelines(config):
        problems.append("service.pipelines is empty")
    return problems


def _id_problems(config: Config) -> list[str]:
    ids = [cid for section in SECTIONS for cid in defined(config, section)]
    ids += list(pipelines(config))
    return [f"malformed component id {cid!r}" for cid in ids if not ID_RE.fullmatch(cid)]


def _pipeline_shape_problems(config: Config) -> list[str]:
    problems = []
    for name, pipe in pipelines(config).items():
        if signal_of(name) not in SIGNALS:
            problems.append(f"pipeline {name!r}: unknown signal {signal_of(name)!r}")
        for role in ("receivers", "exporters"):
            if not pipe.get(role):
                problems.append(f"pipeline {name!r} has no {role}")
        for role in ("receivers", "processors", "exporters"):
            listed = pipe.get(role) or []
            if len(listed) != len(set(listed)):
                problems.append(f"pipeline {name!r} lists a {role[:-1]} twice")
    return problems


def _reference_problems(config: Config) -> list[str]:
    connectors = defined(config, "connectors")
    allowed = {
        "receivers": defined(config, "receivers") | connectors,
        "processors": defined(config, "processors"),
        "exporters": defined(config, "exporters") | connectors,
    }
    return [
        f"pipeline {name!r} references undefined {role[:-1]} {cid!r}"
        for name, pipe in pipelines(config).items()
        for role, known in allowed.items()
        for cid in pipe.get(role) or []
        if cid not in known
    ]


def _unused_problems(config: Config) -> list[str]:
    problems = []
    for section in ("receivers", "processors", "exporters"):
        for cid in sorted(defined(config, section) - used(config, section)):
            problems.append(f"{section[:-1]} {cid!r} is defined but in no pipeline")
    return problems


def _connector_problems(config: Config) -> list[str]:
    problems = []
    for cid in sorted(defined(config, "connectors")):
        as_exporter = _signals_using(config, cid, "exporters")
        as_receiver = _signals_using(config, cid, "receivers")
        if not as_exporter or not as_receiver:
            problems.append(
                f"connector {cid!r} must be an exporter in one pipeline and a receiver in another"
            )
            continue
        supported = CONNECTOR_SIGNALS.get(component_type(cid), set())
        for signal in as_exporter:
            if not any((signal, target) in supported for target in as_receiver):
                problems.append(f"connector {cid!r} cannot carry {signal} to {sorted(as_receiver)}")
        for signal in as_receiver:
            if not any((source, signal) in supported for source in as_exporter):
                problems.append(
                    f"connector {cid!r} cannot produce {signal} from {sorted(as_exporter)}"
                )
    return problems


def _signals_using(config: Config, cid: str, role: str) -> set[str]:
    return {
        signal_of(name) for name, pipe in pipelines(config).items() if cid in (pipe.get(role) or [])
    }


def _extension_problems(config: Config) -> list[str]:
    enabled = list((config.get("service") or {}).get("extensions") or [])
    available = defined(config, "extensions")
    problems = [
        f"service.extensions names undefined {ext!r}" for ext in enabled if ext not in available
    ]
    problems += [
        f"extension {ext!r} is defined but not in service.extensions"
        for ext in sorted(available - set(enabled))
    ]
    for owner, ext in extension_references(config):
        if ext not in enabled:
            problems.append(f"{owner} needs extension {ext!r}, which is not enabled")
    return problems


def extension_references(config: Config) -> Iterator[tuple[str, str]]:
    """(component id, extension id) for every queue storage and authenticator a component names."""
    for section in ("receivers", "exporters"):
        for cid, settings in (config.get(section) or {}).items():
            settings = settings or {}
            storage = (settings.get("sending_queue") or {}).get("storage")
            authenticator = (settings.get("auth") or {}).get("authenticator")
            yield from ((cid, ext) for ext in (storage, authenticator) if ext)


# --- environment placeholders ----------------------------------------------------------------


def strings(node: Any) -> Iterator[str]:
    """Every string scalar (keys included) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def placeholders(config: Config) -> Iterator[str]:
    """The inside of every ``${...}`` in the config."""
    for text in strings(config):
        yield from PLACEHOLDER_RE.findall(text)


def env_defaults(config: Config) -> dict[str, set[str | None]]:
    """Each ``${env:VAR[:-default]}`` variable with the defaults it is given (None: no default)."""
    found: dict[str, set[str | None]] = {}
    for inner in placeholders(config):
        match = ENV_RE.fullmatch(inner)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


def with_defaults(text: str, environ: dict[str, str] | None = None) -> str:
    """Expand placeholders as the collector does: a variable's value in ``environ``, else its
    default (a placeholder without one is left as it is)."""

    def expand(match: re.Match[str]) -> str:
        env = ENV_RE.fullmatch(match.group(1))
        if env is not None and environ and env.group(1) in environ:
            return environ[env.group(1)]
        if env is None or env.group(2) is None:
            return match.group(0)
        return env.group(2)

    return PLACEHOLDER_RE.sub(expand, text)


def port_of(endpoint: str) -> int:
    """The port of ``host:port`` or ``scheme://host:port/path`` once defaults are applied."""
    text = with_defaults(endpoint)
    host_port = text.split("://", 1)[-1].split("/", 1)[0]
    return int(host_port.rsplit(":", 1)[1])


def host_of(endpoint: str) -> str:
    """The host of an endpoint once defaults are applied."""
    host_port = with_defaults(endpoint).split("://", 1)[-1].split("/", 1)[0]
    return host_port.rsplit(":", 1)[0] if ":" in host_port else host_port
