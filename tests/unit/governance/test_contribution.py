"""Leave-one-out and Shapley contributions against brute force over every ordering."""

from __future__ import annotations

from itertools import permutations

import pytest

from healthspace.governance.contribution import as_points, leave_one_out, shapley


def by_permutations(value, players):
    """An independent reference: average marginal contribution over all n! orders."""
    names = sorted(players)
    totals = dict.fromkeys(names, 0.0)
    orders = list(permutations(names))
    for order in orders:
        seen: frozenset[str] = frozenset()
        for p in order:
            totals[p] += value(seen | {p}) - value(seen)
            seen = seen | {p}
    return {p: t / len(orders) for p, t in totals.items()}


def accuracy(coalition: frozenset[str]) -> float:
    """A made-up validation AUC: sites a, b add signal, c duplicates a, d adds nothing."""
    score = 0.5
    if "a" in coalition or "c" in coalition:
        score += 0.2
    if "b" in coalition:
        score += 0.1 + (0.05 if coalition & {"a", "c"} else 0.0)
    return score


def test_shapley_equals_the_permutation_average_and_is_efficient() -> None:
    players = ["a", "b", "c", "d"]
    phi = shapley(accuracy, players)
    ref = by_permutations(accuracy, players)
    assert phi == pytest.approx(ref, abs=1e-12)
    assert sum(phi.values()) == pytest.approx(accuracy(frozenset(players)) - accuracy(frozenset()))
    assert phi["d"] == pytest.approx(0.0)  # a dummy site earns nothing
    assert phi["a"] == pytest.approx(phi["c"])  # interchangeable sites earn the same


def test_glove_game() -> None:
    # One left glove (l), two right gloves (r1, r2): a pair is worth 1. Known: φ_l = 2/3.
    def gloves(s: frozenset[str]) -> float:
        return float("l" in s and bool(s & {"r1", "r2"}))

    phi = shapley(gloves, ["l", "r1", "r2"])
    assert phi == pytest.approx({"l": 2 / 3, "r1": 1 / 6, "r2": 1 / 6})


def test_leave_one_out_and_points() -> None:
    loo = leave_one_out(accuracy, ["a", "b", "c", "d"])
    full = accuracy(frozenset("abcd"))
    # Leave-one-out misses redundancy: a and c each look worthless while the other is in.
    assert loo == pytest.approx({"a": 0.0, "b": full - accuracy(frozenset("acd")),
                                 "c": 0.0, "d": 0.0})
    assert loo["b"] == pytest.approx(0.15)
    assert as_points(loo) == {"a": 0.0, "b": 100.0, "c": 0.0, "d": 0.0}
    points = as_points(shapley(accuracy, "abcd"))
    assert sum(points.values()) == pytest.approx(100.0, abs=1e-3)
    assert points["a"] == points["c"] > 0 and points["d"] == 0.0
    assert as_points({"x": -1.0, "y": 0.0}) == {"x": 50.0, "y": 50.0}
    with pytest.raises(ValueError, match="leave_one_out"):
        shapley(accuracy, [f"s{i}" for i in range(17)])
