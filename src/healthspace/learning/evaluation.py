"""Federated evaluation from summable parts: AUC, Brier score, log loss and calibration.

A node never sends predictions. It sends, for the model under evaluation, a fine histogram of
its predicted probabilities per class (``bins`` equal-width bins on [0, 1]), the sums of
squared errors and log losses, and per calibration bin the sum of predicted probabilities.
Under secure aggregation only the network's sums of these are ever decoded.

The AUC from histograms counts pairs in different bins exactly and pairs sharing a bin as
ties (½). The exact AUC can differ from it only through the order within shared bins, so
``|AUC_hist − AUC| ≤ Σ_b P_b·N_b / (2·P·N)``: this bound is computed from the same
histogram and reported as ``auc_binning_error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from healthspace.learning.models import log_loss_sum

PARTS = ("hist_pos", "hist_neg", "cal_sum_p", "sq_error", "log_loss")


@dataclass(frozen=True)
class Binning:
    bins: int = 1000
    calibration_bins: int = 10

    def fine(self, p: np.ndarray) -> np.ndarray:
        return np.minimum((p * self.bins).astype(np.int64), self.bins - 1)

    def coarse_of_fine(self) -> np.ndarray:
        """The calibration bin of each fine bin (fine bins nest in calibration bins)."""
        edges = (np.arange(self.bins) + 0.5) / self.bins
        return np.minimum((edges * self.calibration_bins).astype(np.int64),
                          self.calibration_bins - 1)


def local_parts(p: np.ndarray, y: np.ndarray, binning: Binning) -> dict[str, np.ndarray]:
    """One node's summable evaluation parts for predictions ``p`` of outcomes ``y``."""
    fine = binning.fine(p)
    pos = y > 0.5
    coarse = binning.coarse_of_fine()[fine]  # the counts' own bins, even at a bin edge
    return {
        "hist_pos": np.bincount(fine[pos], minlength=binning.bins).astype(np.int64),
        "hist_neg": np.bincount(fine[~pos], minlength=binning.bins).astype(np.int64),
        "cal_sum_p": np.bincount(coarse, weights=p, minlength=binning.calibration_bins),
        "sq_error": np.asarray([float(np.sum((p - y) ** 2))]),
        "log_loss": np.asarray([log_loss_sum(p, y)]),
    }


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> tuple[float | None, float | None]:
    """AUC (ties within a bin count ½) and its binning error bound; None without both classes."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return None, None
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives in lower bins
    wins = float(np.sum(pos * below)) + 0.5 * float(np.sum(pos * neg))
    return wins / (n_pos * n_neg), 0.5 * float(np.sum(pos * neg)) / (n_pos * n_neg)


def _small(count: int, k: int) -> bool:
    return 0 < count < k


def metrics(sums: Mapping[str, np.ndarray], binning: Binning, k: int) -> dict[str, Any]:
    """Network metrics from summed parts; calibration cells under ``k`` are suppressed."""
    pos = np.asarray(sums["hist_pos"], dtype=np.int64)
    neg = np.asarray(sums["hist_neg"], dtype=np.int64)
    n = int(pos.sum() + neg.sum())
    auc, error = auc_from_histograms(pos, neg)
    out: dict[str, Any] = {
        "n": n,
        "auc": auc,
        "auc_binning_error": error,
        "brier": float(sums["sq_error"][0]) / n if n else None,
        "loss": float(sums["log_loss"][0]) / n if n else None,
        "calibration": calibration_table(pos, neg, np.asarray(sums["cal_sum_p"]), binning, k),
    }
    return out


def calibration_table(pos: np.ndarray, neg: np.ndarray, sum_p: np.ndarray, binning: Binning,
                      k: int) -> list[dict[str, Any]]:
    """Per calibration bin: persons, mean predicted risk, observed rate; a bin with fewer
    than ``k`` persons, or 1..k−1 events or non-events, shows only that it was suppressed."""
    coarse = binning.coarse_of_fine()
    rows = []
    for b in range(binning.calibration_bins):
        events = int(pos[coarse == b].sum())
        total = events + int(neg[coarse == b].sum())
        row: dict[str, Any] = {"bin": [b / binning.calibration_bins,
                                       (b + 1) / binning.calibration_bins]}
        if total == 0:
            row.update(n=0, predicted=None, observed=None)
        elif total < k or _small(events, k) or _small(total - events, k):
            row.update(n=None, predicted=None, observed=None, suppressed=True)
        else:
            row.update(n=total, predicted=float(sum_p[b]) / total, observed=events / total)
        rows.append(row)
    return rows


def site_summary(p: np.ndarray, y: np.ndarray, k: int) -> dict[str, Any] | None:
    """A node's own AUC, Brier score and row count, when both classes reach ``k``."""
    events = int(np.sum(y > 0.5))
    if events < k or len(y) - events < k:
        return None
    return {"n": int(len(y)), "auc": exact_auc(p, y), "brier": float(np.mean((p - y) ** 2))}


def exact_auc(p: np.ndarray, y: np.ndarray) -> float:
    """The Mann–Whitney AUC with mid-ranks for ties (on the node, from its own rows)."""
    pos = y > 0.5
    ranks = stats.rankdata(p)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
