"""The knobs of a canary analysis; the defaults decide at about 300 requests per version."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

__all__ = ["ERROR_RATE", "LATENCY", "METRICS", "TAIL_LATENCY", "Settings"]

LATENCY = "latency"
TAIL_LATENCY = "tail_latency"
ERROR_RATE = "error_rate"
METRICS = (LATENCY, TAIL_LATENCY, ERROR_RATE)


@dataclass(frozen=True, slots=True)
class Settings:
    """How strict the analysis is.

    ``alpha`` is the error budget of one analysis: the chance of failing a canary that is no
    worse (across every route and metric, Holm-corrected), and of passing a metric that is worse
    than its tolerance. ``max_looks`` splits it evenly over repeated looks during one rollout.
    Tolerances are what "no worse" allows: ``latency`` and ``tail_latency`` as ratios
    canary/baseline of the typical request and of the ``tail_quantile``, ``error_rate`` as an
    absolute increase of the error rate (0.01: one percentage point).
    """

    alpha: float = 0.05
    max_looks: int = 1
    latency_tolerance: float = 1.20
    tail_tolerance: float = 1.50
    error_tolerance: float = 0.01
    tail_quantile: float = 0.95
    critical: frozenset[str] = field(default_factory=lambda: frozenset({ERROR_RATE}))

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 0.5:
            raise ValueError("alpha must be between 0 and 0.5")
        if self.max_looks < 1:
            raise ValueError("max_looks must be at least 1")
        if self.latency_tolerance <= 1 or self.tail_tolerance <= 1:
            raise ValueError("latency tolerances are ratios above 1 (1.2: 20% slower)")
        if not 0 < self.error_tolerance < 1:
            raise ValueError("error_tolerance is a rate increase between 0 and 1")
        if not 0.5 <= self.tail_quantile <= 0.999:
            raise ValueError("tail_quantile must be between 0.5 and 0.999")
        unknown = set(self.critical) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s): {', '.join(sorted(unknown))}")

    @property
    def alpha_per_look(self) -> float:
        """The error budget of this look: ``alpha / max_looks``."""
        return self.alpha / self.max_looks

    @property
    def z(self) -> float:
        """Normal quantile of one interval end (one-sided 1 - alpha_per_look)."""
        return NormalDist().inv_cdf(1 - self.alpha_per_look)

    @property
    def confidence(self) -> float:
        """Two-sided confidence of the reported intervals (each end one-sided 1 - alpha)."""
        return 1 - 2 * self.alpha_per_look

    def log_tolerance(self, metric: str) -> float:
        """A ratio tolerance on the log scale the rank and tail effects use."""
        return math.log(self.latency_tolerance if metric == LATENCY else self.tail_tolerance)
