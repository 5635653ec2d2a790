"""fl_train: FedAvg/FedProx against an independent plain-torch training loop and statsmodels.

The reference in this file is written from the documented contract only: features
standardised with the pooled pandas mean and std(ddof=1), text features one-hot over the
sorted levels; local SGD on the mean BCEWithLogitsLoss with one ``default_rng([seed, t])``
permutation per local epoch; FedAvg as the training-row-weighted mean of the local models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
import torch
from scipy import special, stats
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from healthspace.analyses import registry
from healthspace.core.encoding import decode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.learning.models import Architecture, initial_weights
from healthspace.sim import simulate_tables

TOL = 1e-9
FEATURES = ["age", "bmi", "sex", "smoking"]
FORMULA = "y ~ age + bmi + C(sex) + C(smoking)"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny MLPs train ~10x faster on one intra-op thread (and two xdist workers share
    the cores); the result is the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- synthetic data ------------------------------------------------------------------------

def cohort(rng: np.random.Generator, n: int, age_mean: float = 55.0,
           shift: float = 0.0) -> pd.DataFrame:
    age = rng.normal(age_mean, 12.0, n)
    bmi = rng.normal(27.0, 4.0, n)
    sex = rng.choice(["female", "male"], n)
    smoking = rng.choice(["current", "former", "never"], n, p=[0.2, 0.3, 0.5])
    eta = (shift - 0.4 + 0.05 * (age - 55) + 0.12 * (bmi - 27) + 0.5 * (sex == "male")
           + 0.9 * (smoking == "current") + 0.3 * (smoking == "former"))
    y = (rng.uniform(size=n) < special.expit(eta)).astype(int)
    return pd.DataFrame({"age": age.round(2), "bmi": bmi.round(2), "sex": sex,
                         "smoking": smoking, "y": y})


def write(tmp_path, frames: dict[str, pd.DataFrame]) -> tuple[dict[str, Any], dict[str, Any]]:
    """CSV per site; returns the paths and the frames as read back (what the node sees)."""
    paths, back = {}, {}
    for name, frame in frames.items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
        back[name] = pd.read_csv(paths[name])
    return paths, back


def iid_sites(tmp_path, n: int = 900, parts: int = 3, seed: int = 11):
    pooled = cohort(np.random.default_rng(seed), n)
    order = np.random.default_rng(seed + 1).permutation(n)
    frames = {name: pooled.iloc[np.sort(idx)].reset_index(drop=True)
              for name, idx in zip("ABCD", np.array_split(order, parts), strict=False)}
    return write(tmp_path, frames)


# -- the independent reference ------------------------------------------------------------

def design(frame: pd.DataFrame, pooled: pd.DataFrame, features=FEATURES) -> np.ndarray:
    cols = []
    for name in features:
        if pd.api.types.is_numeric_dtype(pooled[name]):
            mean, std = pooled[name].mean(), pooled[name].std(ddof=1)
            cols.append(((frame[name] - mean) / std).to_numpy(dtype=float))
        else:
            for level in sorted(pooled[name].astype(str).unique()):
                cols.append((frame[name].astype(str) == level).to_numpy(dtype=float))
    return np.column_stack(cols)


def reference_net(kind: str, inputs: int, hidden=(), seed: int = 0) -> torch.nn.Module:
    if kind == "logistic":
        net = torch.nn.Linear(inputs, 1, dtype=torch.float64)
        torch.nn.init.zeros_(net.weight)
        torch.nn.init.zeros_(net.bias)
        return net
    widths = [inputs, *hidden, 1]
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(fan_in, fan_out, dtype=torch.float64))
    net = torch.nn.Sequential(*layers)
    start = initial_weights(Architecture("mlp", inputs, tuple(hidden)), seed)
    with torch.no_grad():
        vector_to_parameters(torch.from_numpy(start), net.parameters())
    return net


def local_sgd(net, X, y, *, seed, round_no, epochs, batch_size, lr, mu=0.0) -> None:
    anchor = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    rng = np.random.default_rng([seed, round_no])
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for lo in range(0, len(y), batch_size):
            idx = torch.from_numpy(order[lo:lo + batch_size])
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]).squeeze(1), yt[idx])
            if mu:
                loss = loss + mu / 2 * sum(((p - a) ** 2).sum()
                                           for p, a in zip(net.parameters(), anchor, strict=True))
            loss.backward()
            opt.step()


def vector(net) -> np.ndarray:
    return parameters_to_vector(net.parameters()).detach().numpy().copy()


def probabilities(net, X) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(net(torch.from_numpy(X)).squeeze(1)).numpy()


def fedavg_reference(frames: list[pd.DataFrame], *, kind="logistic", hidden=(), rounds,
                     epochs=1, batch_size=32, lr=0.1, seed=0, mu=0.0, selections=None):
    """Weights after ``rounds`` of FedAvg (FedProx with mu) over ``frames``."""
    pooled = pd.concat(frames, ignore_index=True)
    data = [(design(f, pooled), f["y"].to_numpy(dtype=float)) for f in frames]
    net = reference_net(kind, data[0][0].shape[1], hidden, seed)
    w = vector(net)
    for t in range(1, rounds + 1):
        chosen = range(len(frames)) if selections is None else selections[t]
        total, rows = np.zeros_like(w), 0
        for i in chosen:
            X, y = data[i]
            with torch.no_grad():
                vector_to_parameters(torch.from_numpy(w.copy()), net.parameters())
            local_sgd(net, X, y, seed=seed, round_no=t, epochs=epochs, batch_size=batch_size,
                      lr=lr, mu=mu)
            total += len(y) * vector(net)
            rows += len(y)
        w = total / rows
    return w


def auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y > 0.5], p[y <= 0.5]
    return float(stats.mannwhitneyu(pos, neg).statistic) / (len(pos) * len(neg))


def mean_bce(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def weights_of(result: dict[str, Any]) -> np.ndarray:
    return decode_array(result["model"]["weights"])


def own_predictions(result: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Logistic predictions made here from the returned preparation and weights."""
    prep = result["model"]["preparation"]
    cols = []
    for name in prep["features"]:
        if prep["kinds"][name] == "numeric":
            cols.append((frame[name].to_numpy(float) - prep["means"][name]) / prep["stds"][name])
        else:
            cols += [(frame[name].astype(str) == lv).to_numpy(float) for lv in prep["levels"][name]]
    w = weights_of(result)
    return special.expit(np.column_stack(cols) @ w[:-1] + w[-1])


def fl(paths, secure=False, on_progress=None, **params) -> dict[str, Any]:
    params = {"target": "y", "features": FEATURES, **params}
    return simulate_tables("fl_train", paths, params=params, secure=secure,
                           on_progress=on_progress)


# -- 1. one node is centralised training -------------------------------------------------

@pytest.mark.parametrize(("kind", "hidden"), [("logistic", ()), ("mlp", (8, 4))])
def test_one_node_equals_centralised_torch_training(tmp_path, kind, hidden):
    R, E, B, LR, SEED = 4, 2, 16, 0.05, 3
    paths, frames = write(tmp_path, {"A": cohort(np.random.default_rng(5), 400)})
    data = frames["A"]
    result = fl(paths, model=kind, hidden=list(hidden) or [16], rounds=R, local_epochs=E,
                batch_size=B, learning_rate=LR, seed=SEED)

    X, y = design(data, data), data["y"].to_numpy(dtype=float)
    net = reference_net(kind, X.shape[1], hidden, SEED)
    losses = []
    for t in range(1, R + 1):
        local_sgd(net, X, y, seed=SEED, round_no=t, epochs=E, batch_size=B, lr=LR)
        losses.append(mean_bce(probabilities(net, X), y))
    expected = vector(net)

    got = weights_of(result)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= TOL
    assert result["model"]["columns"] == ["age", "bmi", "sex=female", "sex=male",
                                          "smoking=current", "smoking=former", "smoking=never"]
    p = probabilities(net, X)
    exact = auc(p, y)
    assert result["sites"]["A"]["auc"] == pytest.approx(exact, abs=TOL)
    metrics = result["metrics"]
    assert abs(metrics["auc"] - exact) <= metrics["auc_binning_error"] + 1e-12
    assert metrics["loss"] == pytest.approx(mean_bce(p, y), abs=TOL)
    assert metrics["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=TOL)
    assert metrics["n"] == len(y)
    assert [r["round"] for r in result["rounds"]] == list(range(1, R + 1))
    assert [r["loss"] for r in result["rounds"]] == pytest.approx(losses, abs=TOL)
    assert result["selected_round"] == R and result["stopped_early"] is False


# -- 2. IID split reaches the centralised fit ---------------------------------------------

def test_iid_split_reaches_centralised_auc_and_binning_bound_holds(tmp_path):
    paths, frames = iid_sites(tmp_path, n=3000)
    pooled = pd.concat(frames.values(), ignore_index=True)
    result = fl(paths, rounds=8, learning_rate=0.1, batch_size=32, seed=2)

    fit = smf.logit(FORMULA, pooled).fit(disp=0, tol=1e-12, maxiter=100)
    y = pooled["y"].to_numpy(dtype=float)
    central_auc = auc(fit.predict(pooled).to_numpy(), y)
    mle_loss = -fit.llf / len(pooled)

    metrics = result["metrics"]
    assert metrics["n"] == len(pooled)
    assert abs(metrics["auc"] - central_auc) <= 0.005
    # The MLE minimises the mean log loss: SGD can come close, never below.
    assert mle_loss - 1e-9 <= metrics["loss"] <= mle_loss + 0.01

    mine = own_predictions(result, pooled)
    assert metrics["loss"] == pytest.approx(mean_bce(mine, y), abs=TOL)
    exact = auc(mine, y)
    bound = metrics["auc_binning_error"]
    assert 0 < bound < 0.01  # 3000 rows in 1000 bins do share bins
    assert abs(metrics["auc"] - exact) <= bound + 1e-12

    population = result["population"]
    assert population["n_train"] == len(pooled) and population["events"] == int(y.sum())
    for name in ("age", "bmi"):
        assert population["means"][name] == pytest.approx(pooled[name].mean(), rel=1e-12)
        assert population["stds"][name] == pytest.approx(pooled[name].std(ddof=1), rel=1e-9)
    assert population["levels"] == {"sex": ["female", "male"],
                                    "smoking": ["current", "former", "never"]}
    assert np.max(np.abs(weights_of(result) - fedavg_reference(
        list(frames.values()), rounds=8, seed=2))) <= TOL


# -- 3. heterogeneous sites still train -----------------------------------------------------

def test_heterogeneous_case_mix_trains(tmp_path):
    rng = np.random.default_rng(23)
    frames = {"A": cohort(rng, 500, age_mean=40, shift=-1.2),
              "B": cohort(rng, 800, age_mean=55, shift=0.0),
              "C": cohort(rng, 1100, age_mean=70, shift=0.9)}
    paths, frames = write(tmp_path, frames)
    prevalence = [f["y"].mean() for f in frames.values()]
    assert prevalence[0] < 0.3 < 0.6 < prevalence[2]  # the case mix really differs
    result = fl(paths, rounds=10, learning_rate=0.1, seed=4)

    losses = [r["loss"] for r in result["rounds"]]
    assert len(losses) == 10
    assert losses[-1] < losses[0] - 0.01
    pooled = pd.concat(frames.values(), ignore_index=True)
    fit = smf.logit(FORMULA, pooled).fit(disp=0)
    central = auc(fit.predict(pooled).to_numpy(), pooled["y"].to_numpy(dtype=float))
    got = result["metrics"]["auc"]
    assert got > 0.7
    assert abs(got - central) <= 0.01
    for name, frame in frames.items():  # per-site AUCs are the model's exact site AUCs
        y = frame["y"].to_numpy(dtype=float)
        site = result["sites"][name]
        assert site["n"] == len(frame)
        assert site["auc"] == pytest.approx(auc(own_predictions(result, frame), y), abs=TOL)


# -- 4. secure aggregation ----------------------------------------------------------------

@pytest.mark.parametrize("params", [
    {"model": "logistic", "rounds": 3},
    {"model": "mlp", "hidden": [6], "rounds": 3, "holdout": 0.2, "strategy": "fedprox",
     "mu": 0.1},
], ids=["logistic", "mlp-holdout-fedprox"])
def test_secure_aggregation_gives_the_same_model(tmp_path, params):
    paths, _ = iid_sites(tmp_path, n=900)
    clear = fl(paths, secure=False, seed=9, **params)
    masked = fl(paths, secure=True, seed=9, **params)
    assert clear["secure_aggregation"] is False and masked["secure_aggregation"] is True
    assert np.max(np.abs(weights_of(clear) - weights_of(masked))) <= TOL
    for block in ("metrics", "validation"):
        a, b = clear[block], masked[block]
        if a is None:
            assert b is None and not params.get("holdout")
            continue
        assert a["n"] == b["n"] and a["auc"] == b["auc"]  # histograms are exact integers
        for key in ("auc_binning_error", "brier", "loss"):
            assert a[key] == pytest.approx(b[key], abs=TOL)
        assert [c.get("n") for c in a["calibration"]] == [c.get("n") for c in b["calibration"]]
    assert [r["loss"] for r in clear["rounds"]] == pytest.approx(
        [r["loss"] for r in masked["rounds"]], abs=TOL)
    assert clear["population"]["n_train"] == masked["population"]["n_train"]
    for key in ("means", "stds"):
        for name, value in clear["population"][key].items():
            assert masked["population"][key][name] == pytest.approx(value, rel=1e-9)


# -- 5. strategies, selection, early stopping, min_nodes ---------------------------------

@pytest.mark.parametrize(("kind", "hidden"), [("logistic", ()), ("mlp", (6,))])
def test_fedprox_matches_reference_and_mu_zero_is_fedavg(tmp_path, kind, hidden):
    paths, frames = iid_sites(tmp_path, n=600)
    common = {"model": kind, "hidden": list(hidden) or [16], "rounds": 3, "local_epochs": 3,
              "batch_size": 16, "learning_rate": 0.2, "seed": 5}
    fedavg = weights_of(fl(paths, strategy="fedavg", **common))
    prox0 = weights_of(fl(paths, strategy="fedprox", mu=0.0, **common))
    prox = weights_of(fl(paths, strategy="fedprox", mu=1.0, **common))
    assert np.array_equal(prox0, fedavg)
    assert np.max(np.abs(prox - fedavg)) > 1e-3
    ref = dict(kind=kind, hidden=hidden, rounds=3, epochs=3, batch_size=16, lr=0.2, seed=5)
    assert np.max(np.abs(fedavg - fedavg_reference(list(frames.values()), **ref))) <= TOL
    assert np.max(np.abs(prox - fedavg_reference(list(frames.values()), mu=1.0, **ref))) <= TOL


def test_fraction_trains_only_the_selected_nodes(tmp_path):
    paths, frames = iid_sites(tmp_path, n=1000, parts=4)
    names = sorted(paths)
    R = 4
    seen: list[dict[str, Any]] = []
    fl(paths, fraction=0.5, rounds=R + 1, seed=8, on_progress=seen.append)  # to learn round R's
    selections = {e["round"]: e["selected"] for e in seen if not e.get("final")}
    result = fl(paths, fraction=0.5, rounds=R, seed=8)

    assert all(len(selections[t]) == 2 and set(selections[t]) <= set(names)
               for t in range(1, R + 1))
    assert len({tuple(selections[t]) for t in range(1, R + 1)}) > 1
    assert [r["nodes"] for r in result["rounds"]] == [4] * R  # every node still evaluates
    assert all("selected" not in r for r in result["rounds"])
    as_index = {t: [names.index(s) for s in selections[t]] for t in range(1, R + 1)}
    listed = [frames[n] for n in names]
    expected = fedavg_reference(listed, rounds=R, seed=8, selections=as_index)
    got = weights_of(result)
    assert np.max(np.abs(got - expected)) <= TOL
    assert np.max(np.abs(got - fedavg_reference(listed, rounds=R, seed=8))) > 1e-4
    assert result["metrics"]["n"] == 1000  # evaluation covers every site


def test_early_stopping_keeps_the_best_validation_model(tmp_path):
    paths, frames = iid_sites(tmp_path, n=800, parts=2)
    common = {"holdout": 0.3, "learning_rate": 0.1, "seed": 6}
    result = fl(paths, rounds=40, patience=2, min_delta=0.005, **common)
    history = result["rounds"]
    assert result["stopped_early"] is True
    assert len(history) < 40 and result["selected_round"] < 40

    best, best_round, stale, stopped_at = np.inf, 0, 0, None
    for entry in history:  # the documented rule, replayed on the reported validation losses
        if entry["validation_loss"] < best - 0.005:
            best, best_round, stale = entry["validation_loss"], entry["round"], 0
        else:
            stale += 1
        if stale >= 2:
            stopped_at = entry["round"]
            break
    assert stopped_at == history[-1]["round"]
    assert result["selected_round"] == best_round
    assert result["validation"]["loss"] == pytest.approx(best, abs=TOL)
    n_valid = result["population"]["n_valid"]
    assert result["validation"]["n"] == n_valid and 0.2 * 800 < n_valid < 0.4 * 800
    assert result["metrics"]["n"] == 800 - n_valid

    again = fl(paths, rounds=best_round, **common)  # the same model, trained to that round
    assert again["stopped_early"] is False
    assert np.max(np.abs(weights_of(again) - weights_of(result))) <= TOL


def test_min_nodes_above_the_site_count_is_refused(tmp_path):
    paths, _ = iid_sites(tmp_path, n=400, parts=2)
    with pytest.raises(Refused, match="min_nodes 3"):
        fl(paths, min_nodes=3, rounds=2)


# -- 9. parameters -------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "field"), [
    ({"model": "svm"}, "params.model"),
    ({"rounds": 0}, "params.rounds"),
    ({"rounds": 501}, "params.rounds"),
    ({"holdout": 0.9}, "params.holdout"),
    ({"strategy": "fedsgd"}, "params.strategy"),
    ({"learning_rate": 0}, "params.learning_rate"),
    ({"fraction": 0}, "params.fraction"),
    ({"features": []}, "params.features"),
    ({"patience": 0}, "params.patience"),
    ({"dp_delta": 0.5}, "params.dp_delta"),
    ({"epochs": 3}, "params.epochs"),
    ({"model_name": "Not A Name"}, "params.model_name"),
])
def test_bad_params_name_the_field(extra, field):
    with pytest.raises(InvalidInput) as info:
        registry.get("fl_train").parse_params({"target": "y", "features": ["age"], **extra})
    assert info.value.field == field


@pytest.mark.parametrize(("extra", "field"), [
    ({"features": ["age", "age"]}, "params.features"),
    ({"hidden": [0]}, "params.hidden"),
])
def test_model_level_param_errors_name_the_field(extra, field):
    with pytest.raises(InvalidInput) as info:
        registry.get("fl_train").parse_params({"target": "y", "features": ["age"], **extra})
    assert info.value.field == field


@pytest.mark.parametrize(("change", "params", "field"), [
    (lambda f: f.assign(y=f["y"] * 2), {}, "params.target"),        # values 0/2
    (lambda f: f.assign(y=0), {}, "params.target"),                  # one class only
    (lambda f: f, {"features": ["age", "nosuch"]}, "params.features"),
    (lambda f: f, {"target": "nosuch"}, "params.target"),
    (lambda f: f, {"features": ["age", "y"]}, "params.features"),
])
def test_bad_data_names_the_field(tmp_path, change, params, field):
    paths, _ = write(tmp_path, {"A": change(cohort(np.random.default_rng(1), 200))})
    with pytest.raises(InvalidInput) as info:
        fl(paths, rounds=1, **params)
    assert info.value.field == field


def test_small_site_refused(tmp_path):
    rng = np.random.default_rng(3)
    paths, _ = write(tmp_path, {"A": cohort(rng, 200), "B": cohort(rng, 6)})
    with pytest.raises(Refused, match="site B refused.*6 usable rows"):
        fl(paths, rounds=1)


def test_bins_must_nest_the_calibration_bins(tmp_path):
    paths, _ = write(tmp_path, {"A": cohort(np.random.default_rng(1), 200)})
    with pytest.raises(InvalidInput) as info:
        fl(paths, rounds=1, bins=1001)
    assert info.value.field == "params.bins"


def test_bins_are_checked_before_any_training():
    with pytest.raises(InvalidInput):
        registry.get("fl_train").parse_params({"target": "y", "features": ["age"],
                                               "bins": 1001})
