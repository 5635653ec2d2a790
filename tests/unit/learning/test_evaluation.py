"""learning.evaluation: histogram AUC and its bound against the exact Mann–Whitney AUC;
calibration suppression; site summaries."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from healthspace.learning.evaluation import (
    Binning,
    auc_from_histograms,
    calibration_table,
    exact_auc,
    local_parts,
    metrics,
    site_summary,
)


def mw_auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    return float(stats.mannwhitneyu(pos, neg).statistic) / (len(pos) * len(neg))


def histograms(p, y, bins):
    fine = np.minimum((p * bins).astype(int), bins - 1)
    return (np.bincount(fine[y == 1], minlength=bins), np.bincount(fine[y == 0], minlength=bins))


@pytest.mark.parametrize(("seed", "n", "bins"), [(0, 500, 1000), (1, 5000, 100), (2, 300, 10),
                                                 (3, 2000, 50)])
def test_histogram_auc_is_within_its_bound_of_the_exact_auc(seed, n, bins):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(float)
    p = np.clip(rng.beta(2, 5, n) + 0.15 * y, 0, 1)
    pos, neg = histograms(p, y, bins)
    got, bound = auc_from_histograms(pos, neg)
    exact = mw_auc(p, y)
    assert bound > 0
    assert abs(got - exact) <= bound + 1e-12
    # The bound is the share of pairs that tie in a bin, halved: recount it pair by pair.
    fine = np.minimum((p * bins).astype(int), bins - 1)
    tied = (fine[y == 1][:, None] == fine[y == 0][None, :]).mean()
    assert bound == pytest.approx(tied / 2, rel=1e-12)
    # Pairs in different bins are ordered by their bins: counting them directly gives it too.
    a, b = fine[y == 1][:, None], fine[y == 0][None, :]
    assert got == pytest.approx(((a > b) + 0.5 * (a == b)).mean(), rel=1e-12)


def test_distinct_bins_give_the_exact_auc_and_no_error():
    rng = np.random.default_rng(4)
    bins = 1000
    cells = rng.choice(bins, size=300, replace=False)
    p = (cells + rng.uniform(0.1, 0.9, 300)) / bins
    y = (rng.uniform(size=300) < 0.4).astype(float)
    pos, neg = histograms(p, y, bins)
    got, bound = auc_from_histograms(pos, neg)
    assert bound == 0.0
    assert got == pytest.approx(mw_auc(p, y), abs=1e-15)


def test_one_class_gives_no_auc():
    assert auc_from_histograms(np.array([0, 3, 1]), np.zeros(3)) == (None, None)
    assert auc_from_histograms(np.zeros(3), np.array([2, 0, 0])) == (None, None)


def test_exact_auc_uses_mid_ranks_for_ties():
    p = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.2, 0.4, 0.9])
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=float)
    assert exact_auc(p, y) == pytest.approx(mw_auc(p, y), rel=1e-15)


def test_metrics_from_summed_parts_equal_the_pooled_figures():
    rng = np.random.default_rng(5)
    binning = Binning(1000, 10)
    chunks = []
    for n in (400, 700, 250):
        y = (rng.uniform(size=n) < 0.35).astype(float)
        p = np.clip(rng.beta(2, 4, n) + 0.2 * y, 1e-6, 1 - 1e-6)
        chunks.append((p, y))
    parts = [local_parts(p, y, binning) for p, y in chunks]
    sums = {k: sum(part[k] for part in parts) for k in parts[0]}
    p = np.concatenate([c[0] for c in chunks])
    y = np.concatenate([c[1] for c in chunks])
    out = metrics(sums, binning, k=5)
    assert out["n"] == len(y)
    assert out["brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    assert out["loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)),
                                        rel=1e-12)
    assert abs(out["auc"] - mw_auc(p, y)) <= out["auc_binning_error"] + 1e-12
    shown = [row for row in out["calibration"] if row.get("n")]
    assert shown
    for row in shown:
        lo, hi = row["bin"]
        inside = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        assert row["n"] == int(inside.sum())
        assert row["observed"] == pytest.approx(y[inside].mean(), rel=1e-12)
        assert row["predicted"] == pytest.approx(p[inside].mean(), rel=1e-12)


def test_calibration_table_suppresses_small_cells():
    binning = Binning(100, 10)
    k = 5
    pos, neg = np.zeros(100, int), np.zeros(100, int)
    sum_p = np.zeros(10)
    # per calibration bin b (fine bins 10b..10b+9): (events, non-events)
    cells = {0: (0, 0),      # empty
             1: (1, 2),      # 3 persons < k
             2: (2, 20),     # 2 events: 1..k-1
             3: (20, 3),     # 3 non-events: 1..k-1
             4: (0, 12),     # no events, 12 persons: shown
             5: (5, 5),      # exactly k each: shown
             6: (9, 31)}     # shown
    for b, (events, non_events) in cells.items():
        pos[10 * b + 3] = events
        neg[10 * b + 7] = non_events
        sum_p[b] = (events + non_events) * (b + 0.5) / 10
    rows = calibration_table(pos, neg, sum_p, binning, k)
    assert [row["bin"] for row in rows] == [[b / 10, (b + 1) / 10] for b in range(10)]
    assert rows[0] == {"bin": [0.0, 0.1], "n": 0, "predicted": None, "observed": None}
    for b in (1, 2, 3):
        assert rows[b]["suppressed"] is True
        assert rows[b]["n"] is None and rows[b]["predicted"] is None
        assert rows[b]["observed"] is None
    for b in (4, 5, 6):
        events, non_events = cells[b]
        assert "suppressed" not in rows[b]
        assert rows[b]["n"] == events + non_events
        assert rows[b]["observed"] == pytest.approx(events / (events + non_events))
        assert rows[b]["predicted"] == pytest.approx((b + 0.5) / 10)
    assert all(rows[b]["n"] == 0 for b in (7, 8, 9))


def test_site_summary_needs_k_of_each_class():
    rng = np.random.default_rng(6)
    p = rng.uniform(size=40)
    y = np.zeros(40)
    y[:9] = 1
    assert site_summary(p, y, k=10) is None  # 9 events
    assert site_summary(p, 1 - y, k=10) is None  # 9 non-events
    y[9] = 1
    summary = site_summary(p, y, k=10)
    assert summary is not None
    assert summary["n"] == 40
    assert summary["auc"] == pytest.approx(mw_auc(p, y), rel=1e-12)
    assert summary["brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)


def test_calibration_sums_follow_the_fine_bins():
    binning = Binning(1000, 10)
    p = np.array([0.8999999999999999] * 20)  # fine bin 899, calibration bin 8
    y = np.r_[np.ones(10), np.zeros(10)]
    parts = local_parts(p, y, binning)
    row = calibration_table(parts["hist_pos"], parts["hist_neg"], parts["cal_sum_p"],
                            binning, k=5)[8]
    assert row["n"] == 20
    assert row["predicted"] == pytest.approx(0.9)
