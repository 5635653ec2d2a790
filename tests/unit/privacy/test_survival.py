"""The survival disclosure unit: late times coarsened so every released time has ≥ k at risk."""

import numpy as np
import pytest

from healthspace.core.errors import Refused
from healthspace.privacy.survival import coarsen_times


def risk_sets(times):
    return {float(u): int(np.sum(times >= u)) for u in np.unique(times)}


def test_long_tail_moves_onto_the_last_safe_time():
    times = np.arange(1.0, 31.0)  # 30 distinct times, one person each
    rule = coarsen_times(times, 10)
    assert rule.cutoff == 21.0  # #{T ≥ 21} = 10, #{T ≥ 22} = 9
    assert rule.moved == 9
    assert np.array_equal(rule.times[:21], times[:21])
    assert np.all(rule.times[21:] == 21.0)
    assert min(risk_sets(rule.times).values()) == 10


def test_nothing_moves_when_the_last_time_is_shared_by_k():
    times = np.array([3.0, 1.0, 52.0, 7.0] + [52.0] * 9)
    rule = coarsen_times(times, 10)
    assert rule.moved == 0
    assert rule.cutoff == 52.0
    assert np.array_equal(rule.times, times)


def test_ties_at_the_cutoff_stay_and_order_is_kept():
    times = np.array([9.0, 5.0, 5.0, 5.0, 1.0, 8.0, 2.0])
    rule = coarsen_times(times, 5)
    # descending: 9 8 5 5 5 2 1 — the fifth largest is 5, so 9 and 8 move onto 5
    assert rule.cutoff == 5.0
    assert rule.times.tolist() == [5.0, 5.0, 5.0, 5.0, 1.0, 5.0, 2.0]
    assert rule.moved == 2


@pytest.mark.parametrize("seed", range(20))
def test_rule_on_random_data(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(5, 15))
    times = rng.integers(0, 40, int(rng.integers(k, 80))).astype(float)
    rule = coarsen_times(times, k)
    # every released time has a risk set of at least k …
    assert min(risk_sets(rule.times).values()) >= k
    # … rows at or before the cut-off are untouched, later rows sit on it …
    keep = times <= rule.cutoff
    assert np.array_equal(rule.times[keep], times[keep])
    assert np.all(rule.times[~keep] == rule.cutoff)
    assert rule.moved == int(np.sum(~keep))
    # … and the cut-off is the largest time whose risk set already had k persons.
    assert np.sum(times >= rule.cutoff) >= k
    assert all(np.sum(times >= u) < k for u in np.unique(times) if u > rule.cutoff)


def test_fewer_rows_than_k_is_refused_and_the_floor_holds():
    with pytest.raises(Refused, match="only 4 rows"):
        coarsen_times(np.arange(4.0), 5)
    with pytest.raises(ValueError, match="floor"):
        coarsen_times(np.arange(40.0), 3)
