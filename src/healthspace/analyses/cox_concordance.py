"""Harrell's C for the federated Cox model: exact pair counts within a node, per-time
score-bin histograms for pairs across nodes (those in the same bin are undecidable and bound
the error), and the per-time sums both Cox and concordance build on. Under secure
aggregation the same across-node counts follow exactly from network sums."""

from __future__ import annotations

from collections.abc import Mapping
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


def pair_counts(events: np.ndarray, partners: np.ndarray) -> tuple[int, int, int]:
    """(comparable, concordant, same-bin) pairs of events with partners, both counted per
    time (rows) and score bin (columns). Bilinear in the two arrays."""
    lower = np.cumsum(partners, axis=1) - partners
    return (int(events.sum(axis=1) @ partners.sum(axis=1)), int((events * lower).sum()),
            int((events * partners).sum()))


def pairs_across(parts: list[dict[str, np.ndarray]]) -> tuple[int, int, int]:
    """(comparable, concordant, same-bin) pairs of an event at one site and a row at another,
    from per-time score-bin histograms; same-bin pairs are undecidable."""
    found: list[tuple[int, int, int]] = []
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
        found.append(pair_counts(qa["events"], partners))
    comparable, concordant, undecided = (sum(column) for column in zip(*found, strict=True))
    return comparable, concordant, undecided


def _score_bins(score: np.ndarray, edges: Any) -> np.ndarray:
    """One-hot score bins; the node caps the number of bins, whatever the hub asks."""
    bins = np.asarray(edges, dtype=np.float64)
    if bins.ndim != 1 or len(bins) > SCORE_BINS - 1 or np.any(np.diff(bins) < 0):
        raise Refused(f"concordance bins must be at most {SCORE_BINS} sorted intervals")
    return np.eye(len(bins) + 1, dtype=np.int64)[np.searchsorted(bins, score, side="right")]


def concordance_counts(t: np.ndarray, e: np.ndarray, score: np.ndarray, edges: Any,
                       within_only: bool) -> dict[str, Any]:
    """Exact pair counts within this node and, unless stratified, per-time score-bin counts
    for pairs across nodes."""
    onehot = _score_bins(score, edges)
    comparable, concordant, tied = pairs_within(t, e, score)
    out: dict[str, Any] = {"comparable": comparable, "concordant": concordant, "tied": tied}
    if within_only:  # lifelines' stratified C compares pairs within strata only
        return out
    times, (hist,) = by_time(t, onehot)
    etimes, (ehist,) = by_time(t[e == 1], onehot[e == 1])
    return {**out, "times": encode_array(times), "at_risk": encode_array(tail(hist)),
            "event_times": encode_array(etimes), "events": encode_array(ehist)}


def concordance_sums(t: np.ndarray, e: np.ndarray, score: np.ndarray, edges: Any,
                     grid: np.ndarray | None) -> dict[str, np.ndarray]:
    """This node's summable concordance counts: ``within`` (comparable, concordant, tied)
    and, on the network's event-time ``grid`` (None when stratified), per score bin its
    ``events`` at each time and its ``partners`` (rows at risk, less the events at that
    time), with ``own`` = :func:`pair_counts` of the two.

    :func:`pairs_across` sums ``pair_counts(E_a, P − P_a)`` over nodes a, P the network
    partners; by bilinearity that is ``pair_counts(E, P) − Σ_a pair_counts(E_a, P_a)``, so
    the network sums of these arrays give the same counts exactly (:func:`pairs_summed`).
    """
    onehot = _score_bins(score, edges)
    sums = {"within": np.asarray(pairs_within(t, e, score), dtype=np.int64)}
    if grid is None:
        return sums
    times, (hist,) = by_time(t, onehot)
    at_risk = np.zeros((len(grid), onehot.shape[1]), dtype=np.int64)
    idx = np.searchsorted(times, grid)
    ok = idx < len(times)
    at_risk[ok] = tail(hist)[idx[ok]]
    events = np.zeros_like(at_risk)
    etimes, (ehist,) = by_time(t[e == 1], onehot[e == 1])
    events[np.searchsorted(grid, etimes)] = ehist
    partners = at_risk - events
    own = np.asarray(pair_counts(events, partners), dtype=np.int64)
    return {**sums, "events": events, "partners": partners, "own": own}


def pairs_summed(sums: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """:func:`pairs_across` from the network sums of :func:`concordance_sums`."""
    network = pair_counts(sums["events"], sums["partners"])
    comparable, concordant, undecided = (int(v) - int(o)
                                         for v, o in zip(network, sums["own"], strict=True))
    return comparable, concordant, undecided
