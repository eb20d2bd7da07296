"""One metric family per name in a registry, whose series come from every service's collectors.

tracekit's metrics carry ``service_name`` and ``service_version`` labels, and one process can
record under more than one service: after ``tracekit.shutdown()`` and an ``init()`` under a new
name, or through a middleware given its own ``service_name``. prometheus-client's registry
refuses a second collector of a name it has, and a scrape must show each name once: so each
service's collectors ``join`` the family of their name, which the registry holds.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Described", "join"]


class Described(Protocol):
    """A collector that names its family: prometheus-client's metrics and tracekit's local ones."""

    def describe(self) -> Iterable[Metric]: ...

    def collect(self) -> Iterable[Metric]: ...


class _Family(Collector):
    """The registered collector of one name: its members' samples as one family."""

    def __init__(self, first: Described) -> None:
        self.members = [first]

    def describe(self) -> list[Metric]:
        """The first member's name and type, which the registry reserves (with the suffixes)."""
        return list(self.members[0].describe())

    def collect(self) -> list[Metric]:
        """Every member's samples under the first member's family."""
        family: Metric | None = None
        for member in tuple(self.members):
            for metric in member.collect():
                if family is None:
                    family = metric
                else:
                    family.samples.extend(metric.samples)
        return [] if family is None else [family]


_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Family]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _renew_lock_in_child() -> None:
    """A child of fork() gets a new lock: a thread of the parent joining a service's metrics to
    their families as it forked held this one, and that thread does not exist in the child (its
    first call or message for a new service waited for ever)."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock_in_child)


def join(registry: CollectorRegistry, collector: Described) -> None:
    """Expose ``collector``'s samples in ``registry`` under its family's name, registered by the
    first collector of that name; ``ValueError`` if something else already registered it."""
    name = next(iter(collector.describe())).name
    with _lock:
        families = _families.setdefault(registry, {})
        family = families.get(name)
        if family is None:
            family = _Family(collector)
            registry.register(family)
            families[name] = family
        else:
            family.members.append(collector)
