"""OpenDP mechanisms: certified privacy loss, unbiased noise, 95 % intervals that cover."""

import math

import numpy as np
import opendp.prelude as dp
import pytest

from healthspace.privacy import dp as hdp

DRAWS = 20_000


def exact_coverage(scale, a):
    q = math.exp(-1 / scale)
    return 1 - 2 * q ** (a + 1) / (1 + q)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 3.0])
def test_privacy_loss_is_certified_by_opendp(epsilon):
    for vector in (False, True):
        meas, scale = hdp._int_laplace(epsilon, vector)
        assert meas.map(1) <= epsilon
        assert scale == pytest.approx(1 / epsilon)  # sensitivity 1 / ε
    scale = hdp._sum_scale(-2.0, 5.0, epsilon)
    assert hdp._sum_measurement(-2.0, 5.0, scale).map(1) <= epsilon
    assert scale >= 5.0 / epsilon  # at least max(|lo|, |hi|) / ε


@pytest.mark.parametrize("epsilon", [0.2, 1.0])
def test_histogram_noise_is_unbiased_and_covers_95(epsilon):
    cells = hdp.dp_histogram([50] * DRAWS, epsilon)
    noise = np.array([c.value for c in cells]) - 50
    scale, half = cells[0].scale, cells[0].half_width
    sd = math.sqrt(2 * math.exp(-1 / scale)) / (1 - math.exp(-1 / scale))
    assert abs(noise.mean()) < 4 * sd / math.sqrt(DRAWS)
    covered = float(np.mean(np.abs(noise) <= half))
    expected = exact_coverage(scale, half)
    assert expected >= 0.95 and exact_coverage(scale, half - 1) < 0.95  # the tightest integer
    assert abs(covered - expected) < 4 * math.sqrt(expected * (1 - expected) / DRAWS)
    assert all(c.epsilon == epsilon for c in cells[:3])


def test_half_width_matches_opendp_accuracy():
    for scale in (0.5, 1.0, 2.0, 10.0, 100.0):
        assert hdp.discrete_laplace_half_width(scale) == math.floor(
            dp.discrete_laplacian_scale_to_accuracy(scale, 0.05))


def test_sum_of_noises_interval_is_exact():
    # One part is the single-noise quantile; many parts are checked by simulation.
    assert hdp.sum_half_width([2.0]) == hdp.discrete_laplace_half_width(2.0)
    half = hdp.sum_half_width([1.0] * 21)
    sums = np.array([c.value for c in hdp.dp_histogram([0] * (21 * 4000), 1.0)])
    covered = float(np.mean(np.abs(sums.reshape(4000, 21).sum(axis=1)) <= half))
    assert 0.94 <= covered <= 0.975
    assert hdp.sum_half_width([]) == 0


def test_count_and_sum():
    noisy = hdp.dp_count(1000, 1.0)
    assert isinstance(noisy.value, int) and abs(noisy.value - 1000) < 30
    assert noisy.epsilon == 1.0 and noisy.half_width == 3
    draws = [hdp.dp_sum([1.0, 2.0, 10.0], 0.0, 5.0, 1.0) for _ in range(2000)]
    values = np.array([d.value for d in draws])
    assert abs(values.mean() - 8.0) < 4 * draws[0].scale * math.sqrt(2) / math.sqrt(2000)
    covered = float(np.mean(np.abs(values - 8.0) <= draws[0].half_width))
    assert 0.93 <= covered <= 0.97
    assert draws[0].half_width == pytest.approx(draws[0].scale * math.log(20))


def test_mean_splits_epsilon_and_brackets_truth():
    values = [float(v % 10) for v in range(2000)]  # mean 4.5
    out = hdp.dp_mean(values, 0.0, 9.0, 1.0)
    assert out["epsilon"] == 1.0 and abs(out["mean"] - 4.5) < 0.2
    lo, hi = out["interval"]
    assert lo <= 4.5 <= hi


@pytest.mark.parametrize("epsilon", [0, -1, float("nan"), float("inf")])
def test_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        hdp.dp_count(5, epsilon)
