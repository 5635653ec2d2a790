"""Harrell's C for the federated Cox model: exact pair counts within a node, per-time
score-bin histograms for pairs across nodes (those in the same bin are undecidable and bound
the error), and the per-time sums both Cox and concordance build on."""

from __future__ import annotations

from typing import Any

import numpy as np

from healthspace.core.encoding import encode_array
from healthspace.core.errors import Refused

SCORE_BINS = 64  # concordance bins across sites: finer is tighter but releases finer counts


def by_time(t: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct times (ascending) and each column summed over the rows at each time."""
    order = np.argsort(t, kind="stable")
    ts = t[order]
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    return ts[starts], [np.add.reduceat(c[order], starts, axis=0) for c in columns]


def tail(values: np.ndarray) -> np.ndarray:
    """Sums over times ≥ each time: risk-set sums from per-time sums."""
    return np.cumsum(values[::-1], axis=0)[::-1]


def pairs_within(t: np.ndarray, e: np.ndarray, score: np.ndarray) -> tuple[int, int, int]:
    """Exact (comparable, concordant, tied) pairs among one site's rows, as lifelines counts:
    an event at t is comparable with every row leaving later and every row censored at t."""
    ranks = np.unique(score, return_inverse=True)[1] + 1
    size = int(ranks.max())
    tree = [0] * (size + 1)  # Fenwick tree of the scores of the rows already passed

    def add(i: int) -> None:
        while i <= size:
            tree[i] += 1
            i += i & -i

    def below(i: int) -> int:
        total = 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    comparable = concordant = tied = pool = 0
    order = np.lexsort((e, -t))  # latest time first; censored before events at a time
    ts, es, rs = t[order], e[order], ranks[order]
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    for lo, hi in zip(starts, [*starts[1:], len(ts)], strict=True):
        events = [int(r) for r in rs[lo:hi][es[lo:hi] == 1]]
        for r in rs[lo:hi][es[lo:hi] == 0]:
            add(int(r))
            pool += 1
        for r in events:
            lower = below(r - 1)
            concordant += lower
            tied += below(r) - lower
            comparable += pool
        for r in events:
            add(r)
            pool += 1
    return comparable, concordant, tied


def pairs_across(parts: list[dict[str, np.ndarray]]) -> tuple[int, int, int]:
    """(comparable, concordant, same-bin) pairs of an event at one site and a row at another,
    from per-time score-bin histograms; same-bin pairs are undecidable."""
    comparable = concordant = undecided = 0
    for a, qa in enumerate(parts):
        partners = np.zeros_like(qa["events"])
        for b, qb in enumerate(parts):
            if a == b:
                continue
            idx = np.searchsorted(qb["times"], qa["event_times"])
            ok = idx < len(qb["times"])
            partners[ok] += qb["at_risk"][idx[ok]]
            j = np.searchsorted(qb["event_times"], qa["event_times"])
            hit = j < len(qb["event_times"])
            hit[hit] = qb["event_times"][j[hit]] == qa["event_times"][hit]
            partners[hit] -= qb["events"][j[hit]]  # events at the same time are not comparable
        lower = np.cumsum(partners, axis=1) - partners
        comparable += int(qa["events"].sum(axis=1) @ partners.sum(axis=1))
        concordant += int((qa["events"] * lower).sum())
        undecided += int((qa["events"] * partners).sum())
    return comparable, concordant, undecided


def concordance_counts(t: np.ndarray, e: np.ndarray, score: np.ndarray, edges: Any,
                        within_only: bool) -> dict[str, Any]:
    """Exact pair counts within this node and, unless stratified, per-time score-bin counts
    for pairs across nodes. The node caps the number of bins, whatever the hub asks."""
    bins = np.asarray(edges, dtype=np.float64)
    if bins.ndim != 1 or len(bins) > SCORE_BINS - 1 or np.any(np.diff(bins) < 0):
        raise Refused(f"concordance bins must be at most {SCORE_BINS} sorted intervals")
    comparable, concordant, tied = pairs_within(t, e, score)
    out: dict[str, Any] = {"comparable": comparable, "concordant": concordant, "tied": tied}
    if within_only:  # lifelines' stratified C compares pairs within strata only
        return out
    onehot = np.eye(len(bins) + 1, dtype=np.int64)[np.searchsorted(bins, score, side="right")]
    times, (hist,) = by_time(t, onehot)
    etimes, (ehist,) = by_time(t[e == 1], onehot[e == 1])
    return {**out, "times": encode_array(times), "at_risk": encode_array(tail(hist)),
            "event_times": encode_array(etimes), "events": encode_array(ehist)}
