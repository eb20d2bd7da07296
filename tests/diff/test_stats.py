"""The set form's tests against scipy.stats, the reference, on tied and untied data.

tracekit computes them in plain Python (``tracekit.diff.stats``); scipy is a dev dependency only.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from scipy import stats

from tracekit.diff.stats import fisher_exact, holm, mann_whitney


def _samples(rng: random.Random, tied: bool, n1: int, n2: int) -> tuple[list[float], list[float]]:
    if tied:  # call counts and whole milliseconds: ties everywhere
        return [rng.randint(0, 4) for _ in range(n1)], [rng.randint(0, 5) for _ in range(n2)]
    return (
        [rng.lognormvariate(3.0, 0.5) for _ in range(n1)],
        [rng.lognormvariate(3.1, 0.6) for _ in range(n2)],
    )


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("sizes", [(2, 3), (20, 20), (35, 200), (200, 200), (900, 40)])
def test_mann_whitney_matches_scipy(tied: bool, sizes: tuple[int, int]) -> None:
    rng = random.Random(sum(sizes) * 2 + tied)
    for _ in range(25):
        a, b = _samples(rng, tied, *sizes)
        reference = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")

        assert mann_whitney(a, b) == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-300)


def test_mann_whitney_on_very_different_samples_and_on_identical_ones() -> None:
    a, b = [float(v) for v in range(100)], [float(v) + 1000 for v in range(100)]
    reference = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue

    assert mann_whitney(a, b) == pytest.approx(reference, rel=1e-9)
    assert mann_whitney(a, b) < 1e-30
    assert mann_whitney(a, a) == pytest.approx(1.0)
    assert mann_whitney([5.0] * 30, [5.0] * 40) == 1.0  # all tied: no evidence either way


def test_mann_whitney_refuses_an_empty_sample() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney([], [1.0])


TABLES = [
    (0, 200, 200, 200),  # a node new in every request of B
    (0, 30, 0, 40),  # never in either
    (3, 50, 0, 300),
    (1, 20, 9, 20),
    (7, 7, 0, 9),
    (12, 250, 19, 260),
    (100, 200, 100, 200),  # a perfectly symmetric table: the mirror image must count
    (5, 10, 5, 10),
    (190, 200, 200, 200),
]


@pytest.mark.parametrize("table", TABLES, ids=[str(t) for t in TABLES])
def test_fisher_exact_matches_scipy(table: tuple[int, int, int, int]) -> None:
    a, n_a, b, n_b = table
    reference = stats.fisher_exact([[a, n_a - a], [b, n_b - b]], alternative="two-sided").pvalue

    assert fisher_exact(a, n_a, b, n_b) == pytest.approx(reference, rel=1e-9, abs=1e-300)


def test_fisher_exact_on_random_tables() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n_a, n_b = rng.randint(1, 120), rng.randint(1, 120)
        a, b = rng.randint(0, n_a), rng.randint(0, n_b)
        reference = stats.fisher_exact([[a, n_a - a], [b, n_b - b]]).pvalue

        assert fisher_exact(a, n_a, b, n_b) == pytest.approx(reference, rel=1e-9, abs=1e-300)


def test_fisher_exact_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="between 0 and the number of trials"):
        fisher_exact(5, 3, 0, 1)


def test_holm_matches_its_definition_and_keeps_the_order() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.9]
    # sorted: 0.005*5=0.025, 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> 0.09 (monotone), 0.9*1
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.9])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


WITHOUT_NUMPY = """
import importlib.abc, json, pkgutil, sys

class NoNumpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "numpy":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoNumpy())
import tracekit.diff
for info in pkgutil.walk_packages(tracekit.diff.__path__, "tracekit.diff."):
    __import__(info.name)
from tracekit.diff.stats import fisher_exact, holm, mann_whitney
print(json.dumps([mann_whitney([1, 2, 2, 4], [3, 5, 6, 8]), fisher_exact(1, 10, 7, 10),
                  holm([0.01, 0.04, 0.03])]))
"""


def test_the_set_tests_need_no_numpy() -> None:
    """``tracekit diff`` runs where numpy is not installed (the canary's statistics need it)."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_NUMPY], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    expected = [mann_whitney([1, 2, 2, 4], [3, 5, 6, 8]), fisher_exact(1, 10, 7, 10)]
    assert json.loads(result.stdout) == [*expected, holm([0.01, 0.04, 0.03])]
