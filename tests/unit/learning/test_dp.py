"""learning.dp: the accountant against OpenDP and the analytic zCDP bound; clipping; DP
training through the simulation."""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as odp
import pandas as pd
import pytest
from scipy import special, stats

from healthspace.core.encoding import decode_array
from healthspace.core.errors import InvalidInput
from healthspace.learning import dp
from healthspace.learning.models import Architecture, initial_weights
from healthspace.sim import simulate_tables

odp.enable_features("contrib")


def opendp_epsilon(z: float, rounds: int, delta: float) -> float:
    gaussian = odp.m.make_gaussian(odp.atom_domain(T=float, nan=False),
                                   odp.absolute_distance(T=float), scale=z)
    composed = odp.c.make_composition([gaussian for _ in range(rounds)])
    return odp.c.make_zCDP_to_approxDP(composed).map(1.0).epsilon(delta)


def analytic_epsilon(z: float, rounds: int, delta: float) -> float:
    rho = rounds / (2 * z * z)
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


@pytest.mark.parametrize(("z", "rounds", "delta"), [
    (0.8, 1, 1e-5), (1.3, 10, 1e-5), (4.0, 50, 1e-6), (0.5, 3, 1e-3)])
def test_epsilon_spent_is_opendps_and_below_the_analytic_bound(z, rounds, delta):
    got = dp.epsilon_spent(z, rounds, delta)
    assert got == pytest.approx(opendp_epsilon(z, rounds, delta), rel=1e-12)
    rho = rounds / (2 * z * z)
    assert rho < got <= analytic_epsilon(z, rounds, delta)  # ε exceeds ρ for δ < 1


def test_more_noise_or_fewer_rounds_spend_less():
    assert dp.epsilon_spent(2.0, 10, 1e-5) < dp.epsilon_spent(1.0, 10, 1e-5)
    assert dp.epsilon_spent(1.0, 5, 1e-5) < dp.epsilon_spent(1.0, 10, 1e-5)


@pytest.mark.parametrize(("epsilon", "delta", "rounds"), [
    (1.0, 1e-5, 20), (8.0, 1e-5, 10), (50.0, 1e-5, 5), (3.0, 1e-3, 100)])
def test_noise_multiplier_spends_at_most_epsilon_and_close_to_it(epsilon, delta, rounds):
    z = dp.noise_multiplier(epsilon, delta, rounds)
    spent = opendp_epsilon(z, rounds, delta)
    assert spent <= epsilon
    assert spent >= 0.99 * epsilon
    assert opendp_epsilon(z * 0.99, rounds, delta) > epsilon  # 1 % less noise overspends


@pytest.mark.parametrize(("epsilon", "delta", "rounds"), [
    (0.0, 1e-5, 5), (-1.0, 1e-5, 5), (1.0, 0.0, 5), (1.0, 1.0, 5), (1.0, 1e-5, 0)])
def test_noise_multiplier_rejects_bad_budgets(epsilon, delta, rounds):
    with pytest.raises(InvalidInput) as info:
        dp.noise_multiplier(epsilon, delta, rounds)
    assert info.value.field == "params.dp_epsilon"


def test_clip_scales_long_updates_to_the_bound():
    update = np.array([3.0, 4.0])  # norm 5
    clipped, was = dp.clip(update, 2.0)
    assert was is True
    assert np.linalg.norm(clipped) == pytest.approx(2.0, rel=1e-15)
    assert np.allclose(clipped, update * 0.4, rtol=0, atol=1e-15)  # direction kept
    same, was = dp.clip(update, 5.0)
    assert was is False and np.array_equal(same, update)
    zero, was = dp.clip(np.zeros(3), 1.0)
    assert was is False and np.array_equal(zero, np.zeros(3))


def test_gaussian_noise_has_the_requested_std():
    draws = dp.gaussian(200_000, 0.7)
    assert draws.shape == (200_000,)
    assert abs(draws.mean()) < 0.01
    assert draws.std() == pytest.approx(0.7, rel=0.01)
    assert not np.array_equal(draws[:10], dp.gaussian(10, 0.7))  # fresh, unseeded noise


# -- DP training through the simulation --------------------------------------------------

def sites(tmp_path, n=1500, parts=3, seed=31):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    group = rng.choice(["a", "b"], n)
    y = (rng.uniform(size=n) < special.expit(1.5 * x1 - 1.0 * x2 + 0.5 * (group == "b"))
         ).astype(int)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "group": group, "y": y})
    paths = {}
    for name, idx in zip("ABC", np.array_split(np.arange(n), parts), strict=False):
        paths[name] = tmp_path / f"{name}.csv"
        frame.iloc[idx].to_csv(paths[name], index=False)
    return paths, frame


def train(paths, **params):
    secure = params.pop("secure", False)
    return simulate_tables("fl_train", paths, params={"target": "y",
                                                      "features": ["x1", "x2", "group"],
                                                      **params}, secure=secure)


def test_dp_training_reports_its_budget_and_still_learns(tmp_path):
    paths, frame = sites(tmp_path)
    result = train(paths, rounds=8, dp_epsilon=50, dp_delta=1e-5, dp_clip=1.0, seed=1)
    report = result["dp"]
    z = report["noise_multiplier"]
    assert z == pytest.approx(dp.noise_multiplier(50, 1e-5, 8), rel=1e-12)
    assert opendp_epsilon(z, 8, 1e-5) <= 50
    assert report["sigma"] == pytest.approx(z * 1.0)
    assert (report["epsilon"], report["delta"], report["clip"], report["rounds"]) == (
        50, 1e-5, 1.0, 8)
    assert len(result["rounds"]) == 8
    w = decode_array(result["model"]["weights"])
    assert w.shape == (5,) and np.all(np.isfinite(w))
    prep = result["model"]["preparation"]
    X = np.column_stack([(frame[c] - prep["means"][c]) / prep["stds"][c] for c in ("x1", "x2")]
                        + [(frame["group"] == lv).astype(float) for lv in ("a", "b")])
    p = special.expit(X @ w[:-1] + w[-1])
    y = frame["y"].to_numpy()
    exact = stats.mannwhitneyu(p[y == 1], p[y == 0]).statistic / (y.sum() * (1 - y).sum())
    assert exact > 0.6
    assert result["metrics"]["auc"] == pytest.approx(exact, abs=result["metrics"][
        "auc_binning_error"] + 1e-12)
    assert w[0] > 0  # the strongest true effect keeps its sign through the noise


@pytest.mark.parametrize(("model", "hidden"), [
    ("logistic", ()),
    ("mlp", (2,)),
])
def test_one_dp_round_moves_the_model_towards_the_fedavg_round(tmp_path, model, hidden):
    """With equal sites, a generous ε and a clip above every node's update, one DP round is
    the FedAvg round plus small noise; the DP model lies much nearer to it than the start."""
    paths, _ = sites(tmp_path, n=900)
    common = {"model": model, "hidden": list(hidden) or [16], "rounds": 1, "seed": 2,
              "learning_rate": 0.2, "local_epochs": 2, "secure": True}
    fedavg = decode_array(train(paths, **common)["model"]["weights"])
    start = initial_weights(Architecture(model, 4, tuple(hidden)), 2)
    step = float(np.linalg.norm(fedavg - start))
    assert step > 0.05
    result = train(paths, dp_epsilon=100, dp_delta=1e-5, dp_clip=1.5 * step, **common)
    assert result["secure_aggregation"] is True
    noisy = decode_array(result["model"]["weights"])
    assert float(np.linalg.norm(noisy - fedavg)) < 0.5 * step
