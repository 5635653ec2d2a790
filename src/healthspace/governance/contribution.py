"""Contribution of each data holder to a model's quality: leave-one-out and exact Shapley.

``value`` maps a coalition of sites (a frozenset of names) to the validation metric of a
model trained on those sites only (the empty coalition: the untrained baseline). Both
estimates are pure functions of that map; federated learning evaluates it and turns the
result into contribution points with :func:`as_points`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from itertools import combinations
from math import factorial

Value = Callable[[frozenset[str]], float]
MAX_SHAPLEY_PLAYERS = 16  # 2^16 coalitions: beyond this use leave-one-out


def leave_one_out(value: Value, players: Iterable[str]) -> dict[str, float]:
    """``v(N) − v(N \\ {i})`` for each site: what the network loses without it."""
    everyone = frozenset(players)
    full = value(everyone)
    return {p: full - value(everyone - {p}) for p in sorted(everyone)}


def shapley(value: Value, players: Iterable[str]) -> dict[str, float]:
    """Exact Shapley values: each site's marginal contribution averaged over every order.

    ``φ_i = Σ_{S ⊆ N∖{i}} |S|! (n−|S|−1)! / n! · (v(S ∪ {i}) − v(S))``; the values add up to
    ``v(N) − v(∅)`` (efficiency). Each coalition is evaluated once.
    """
    names = sorted(set(players))
    n = len(names)
    if n > MAX_SHAPLEY_PLAYERS:
        raise ValueError(f"exact Shapley values over {n} sites need 2^{n} evaluations; "
                         f"use leave_one_out")
    v = cache(value)
    out: dict[str, float] = {}
    for player in names:
        others = [p for p in names if p != player]
        total = 0.0
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for coalition in combinations(others, size):
                s = frozenset(coalition)
                total += weight * (v(s | {player}) - v(s))
        out[player] = total
    return out


def as_points(contributions: dict[str, float], total: float = 100.0) -> dict[str, float]:
    """Share ``total`` points in proportion to the positive contributions (equal if none)."""
    positive = {k: max(v, 0.0) for k, v in contributions.items()}
    mass = sum(positive.values())
    if mass <= 0:
        return {k: round(total / len(positive), 4) for k in positive} if positive else {}
    return {k: round(total * v / mass, 4) for k, v in positive.items()}
