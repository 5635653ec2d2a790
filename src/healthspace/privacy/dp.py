"""Differential privacy through OpenDP measurements: counts, histograms, bounded sums, means.

Neighbouring datasets differ by adding or removing one person (OpenDP's symmetric distance
1 on the person-level data). A person changes a count by at most 1, and — because each person
sits in exactly one cell — a histogram over disjoint cells by at most 1 in L1 norm. Every
function returns the noisy value(s), the ``epsilon`` it spent and the half-width of a 95 %
interval of the noise, derived from the scale. Noise is never hand-rolled: OpenDP samples it,
and each measurement's privacy map is checked to be ≤ ε before it is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import opendp.prelude as dp

dp.enable_features("contrib")

ALPHA = 0.05  # every interval is a 95 % interval


@dataclass(frozen=True)
class Noisy:
    """A released value: the noisy number, the ε it spent and its 95 % noise half-width."""

    value: float
    epsilon: float
    half_width: float
    scale: float


def _check_epsilon(epsilon: float) -> float:
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    return float(epsilon)


@lru_cache(maxsize=256)
def _int_laplace(epsilon: float, vector: bool) -> tuple[dp.Measurement, float]:
    """Discrete Laplace on integer counts with L1 sensitivity 1, certified ≤ ε by OpenDP."""
    atom = dp.atom_domain(T="i64")
    domain, metric = ((dp.vector_domain(atom), dp.l1_distance(T="i64")) if vector
                      else (atom, dp.absolute_distance(T="i64")))
    scale = 1.0 / epsilon  # the documented relation scale = sensitivity / ε
    meas = dp.m.make_laplace(domain, metric, scale=scale)
    if meas.map(1) > epsilon:  # float rounding in the map: let OpenDP find the scale
        scale = float(dp.binary_search_param(
            lambda s: dp.m.make_laplace(domain, metric, scale=s), d_in=1, d_out=epsilon))
        meas = dp.m.make_laplace(domain, metric, scale=scale)
    if meas.map(1) > epsilon:
        raise RuntimeError(f"OpenDP does not certify ε={epsilon} for this measurement")
    return meas, scale


def discrete_laplace_half_width(scale: float, alpha: float = ALPHA) -> int:
    """The smallest integer ``a`` with P(|X| > a) ≤ alpha for X ~ discrete Laplace(scale).

    With q = exp(-1/scale), P(X = k) = (1 - q)/(1 + q) · q^|k|, so P(|X| > a) =
    2 q^(a+1) / (1 + q) exactly; coverage is therefore at least 1 - alpha (a little more,
    because the noise is integer).
    """
    q = math.exp(-1.0 / scale)
    return max(0, math.ceil(math.log(alpha * (1 + q) / 2) / math.log(q)) - 1)


def discrete_laplace_pmf(scale: float, tail: float = 1e-12) -> tuple[int, np.ndarray]:
    """(K, pmf on -K..K) of discrete Laplace(scale), truncated where the tail is < ``tail``."""
    q = math.exp(-1.0 / scale)
    k = max(1, math.ceil(math.log(tail * (1 + q) / 2) / math.log(q)))
    support = np.arange(-k, k + 1)
    return k, (1 - q) / (1 + q) * q ** np.abs(support)


def sum_half_width(scales: Sequence[float], alpha: float = ALPHA) -> int:
    """Exact 95 % half-width of a sum of independent discrete Laplace noises.

    The pmf of the sum is the convolution of the parts (computed by FFT, tails below 1e-12
    dropped); the result is the smallest integer ``a`` with P(|sum| > a) ≤ alpha.
    """
    return _sum_half_width(tuple(float(s) for s in scales), alpha)


@lru_cache(maxsize=64)
def _sum_half_width(scales: tuple[float, ...], alpha: float) -> int:
    from scipy.signal import fftconvolve

    if not scales:
        return 0
    offset, pmf = discrete_laplace_pmf(scales[0])
    for scale in scales[1:]:
        k, part = discrete_laplace_pmf(scale)
        pmf = np.clip(fftconvolve(pmf, part), 0.0, None)
        offset += k
    cdf = np.concatenate([[0.0], np.cumsum(pmf)])  # cdf[i] = P(S < i - offset)
    a = np.arange(offset + 1)
    outside = 1.0 - (cdf[offset + a + 1] - cdf[offset - a])  # P(|S| > a)
    return int(np.argmax(outside <= alpha)) if outside[-1] <= alpha else offset


def dp_count(count: int, epsilon: float) -> Noisy:
    """A count with discrete Laplace noise (sensitivity 1): ε-DP under add/remove one person."""
    eps = _check_epsilon(epsilon)
    meas, scale = _int_laplace(eps, False)
    return Noisy(int(meas(int(count))), eps, discrete_laplace_half_width(scale), scale)


def dp_histogram(counts: Sequence[int], epsilon: float) -> list[Noisy]:
    """Counts over disjoint cells, one person in one cell: L1 sensitivity 1, the same scale
    for every cell, and ε for the whole histogram (each cell reports the histogram's ε)."""
    eps = _check_epsilon(epsilon)
    meas, scale = _int_laplace(eps, True)
    half = discrete_laplace_half_width(scale)
    return [Noisy(int(v), eps, half, scale) for v in meas([int(c) for c in counts])]


def _sum_measurement(lo: float, hi: float, scale: float) -> dp.Measurement:
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    return (dp.t.make_clamp(domain, dp.symmetric_distance(), bounds=(lo, hi))
            >> dp.t.then_sum() >> dp.m.then_laplace(scale=scale))


@lru_cache(maxsize=256)
def _sum_scale(lo: float, hi: float, epsilon: float) -> float:
    # OpenDP certifies the sensitivity of a float sum, including rounding slack; the ideal is
    # max(|lo|, |hi|) and OpenDP's bound may be larger, so we search for the scale it accepts.
    return float(dp.binary_search_param(lambda s: _sum_measurement(lo, hi, s),
                                        d_in=1, d_out=epsilon))


def dp_sum(values: Sequence[float], lo: float, hi: float, epsilon: float) -> Noisy:
    """The sum of ``values`` clamped to [lo, hi], with (continuous) Laplace noise.

    The 95 % half-width is scale · ln(1/alpha), since P(|X| > t) = exp(-t / scale).
    """
    eps = _check_epsilon(epsilon)
    if not lo < hi:
        raise ValueError(f"need lo < hi, got [{lo}, {hi}]")
    scale = _sum_scale(float(lo), float(hi), eps)
    meas = _sum_measurement(float(lo), float(hi), scale)
    if meas.map(1) > eps:
        raise RuntimeError(f"OpenDP does not certify ε={eps} for this sum")
    value = meas([float(v) for v in values])
    return Noisy(float(value), eps, scale * math.log(1 / ALPHA), scale)


def dp_mean(values: Sequence[float], lo: float, hi: float, epsilon: float) -> dict[str, Any]:
    """Noisy sum / noisy count, spending ε/2 on each (sequential composition: ε in total).

    The interval uses a union bound: the sum and the count are each within their 97.5 %
    half-widths with probability ≥ 95 % jointly, and the mean's interval is the range of
    (sum ± a_s) / (count ± a_c); it is ``None`` when the count's interval reaches 0.
    """
    eps = _check_epsilon(epsilon)
    total = dp_sum(values, lo, hi, eps / 2)
    meas, scale = _int_laplace(eps / 2, False)
    count = int(meas(len(values)))
    a_s = total.scale * math.log(1 / (ALPHA / 2))
    a_c = discrete_laplace_half_width(scale, ALPHA / 2)
    mean = total.value / count if count > 0 else None
    interval = None
    if count - a_c > 0:
        ends = [(total.value + ds) / (count + dc) for ds in (-a_s, a_s) for dc in (-a_c, a_c)]
        interval = (max(lo, min(ends)), min(hi, max(ends)))
    return {"mean": mean, "sum": total.value, "count": count, "epsilon": eps,
            "interval": interval}
