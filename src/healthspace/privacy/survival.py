"""The survival disclosure unit: coarsen late times so every released time has a risk set ≥ k.

Survival analyses release something per distinct time (event counts, risk-set sums). A time
whose node-local risk set is tiny — the last few persons still under follow-up — would expose
those persons' times and, through risk-set sums, their covariates. The rule: let ``t*`` be the
largest distinct time ``u`` with ``#{T ≥ u} ≥ k``; every row with ``T > t*`` gets ``T = t*``,
its event indicator kept. Afterwards every distinct time has at least ``k`` persons at risk,
and the estimates before ``t*`` are exactly those of the uncoarsened data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from healthspace.core.errors import Refused
from healthspace.privacy.disclosure import check_k


@dataclass(frozen=True)
class Coarsened:
    """Times after the rule, the cut-off ``t*`` and how many rows were moved onto it."""

    times: np.ndarray
    cutoff: float
    moved: int


def coarsen_times(times: np.ndarray, k: int) -> Coarsened:
    """Apply the rule to one node's (or one released group's) durations.

    ``t*`` is the k-th largest duration: at least ``k`` rows have ``T ≥ t*`` and, for any
    larger distinct time, fewer do. Refuses when there are fewer than ``k`` rows, because
    then no time at all can be released.
    """
    check_k(k)
    values = np.asarray(times, dtype=np.float64)
    if len(values) < k:
        raise Refused(f"only {len(values)} rows, below the minimum cell size {k}; no survival "
                      f"time can be released")
    cutoff = float(np.sort(values)[len(values) - k])
    late = values > cutoff
    return Coarsened(times=np.where(late, cutoff, values), cutoff=cutoff, moved=int(late.sum()))
