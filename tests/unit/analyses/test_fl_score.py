"""score: a trained model scores rows as an independent numpy forward pass does; scores stay
on the node and only a suppressed histogram leaves it."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import special

from healthspace.analyses import registry
from healthspace.analyses.base import Final, LocalContext
from healthspace.analyses.fl_score import score_rows
from healthspace.core.encoding import decode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.sim import simulate_tables

TOL = 1e-12
FEATURES = ["x1", "x2", "arm"]


def make(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(50, 10, n), rng.normal(size=n)
    arm = rng.choice(["a", "b", "c"], n)
    eta = 0.08 * (x1 - 50) - 0.7 * x2 + 0.6 * (arm == "c") - 0.2
    return pd.DataFrame({"x1": x1, "x2": x2, "arm": arm,
                         "y": (rng.uniform(size=n) < special.expit(eta)).astype(int)})


@pytest.fixture(scope="module", params=[("logistic", []), ("mlp", [5, 3])],
                ids=["logistic", "mlp"])
def model(request, tmp_path_factory):
    kind, hidden = request.param
    folder = tmp_path_factory.mktemp(f"score_{kind}")
    paths = {}
    for name, seed in (("A", 1), ("B", 2)):
        paths[name] = folder / f"{name}.csv"
        make(300, seed).to_csv(paths[name], index=False)
    params = {"target": "y", "features": FEATURES, "model": kind, "hidden": hidden or [16],
              "rounds": 3, "local_epochs": 3, "learning_rate": 0.3, "seed": 4}
    result = simulate_tables("fl_train", paths, params=params)
    return {**result["model"], "id": 7, "name": f"risk-{kind}", "version": 1}


def reference_scores(model: dict, data: pd.DataFrame) -> np.ndarray:
    """Encode from the model's preparation and run the network in numpy."""
    prep = model["preparation"]
    cols = []
    for name in prep["features"]:
        if prep["kinds"][name] == "numeric":
            cols.append((data[name].to_numpy(float) - prep["means"][name]) / prep["stds"][name])
        else:
            cols += [(data[name] == level).to_numpy(float) for level in prep["levels"][name]]
    h = np.column_stack(cols)
    w = decode_array(model["weights"])
    arch = model["architecture"]
    widths = [arch["inputs"], *(arch["hidden"] if arch["kind"] == "mlp" else []), 1]
    offset = 0
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        W = w[offset:offset + fan_in * fan_out].reshape(fan_out, fan_in)
        offset += fan_in * fan_out
        b = w[offset:offset + fan_out]
        offset += fan_out
        h = h @ W.T + b
        if i < len(widths) - 2:
            h = np.maximum(h, 0)
    assert offset == len(w)
    return special.expit(h[:, 0])


def test_score_rows_matches_the_reference_and_drops_incomplete_rows(model):
    data = make(60, 9)
    data["_person_id"] = np.arange(1000, 1060)
    data.loc[[2, 17], "x1"] = np.nan
    data.loc[40, "arm"] = None
    data.loc[5, "y"] = np.nan  # the outcome is not needed to score
    ids, scores = score_rows(model, data)
    complete = data.drop(index=[2, 17, 40])
    assert ids.tolist() == complete["_person_id"].tolist()
    assert np.max(np.abs(scores - reference_scores(model, complete))) <= TOL
    assert np.all((scores > 0) & (scores < 1))


def test_score_rows_without_person_ids_numbers_the_kept_rows(model):
    data = make(10, 3).drop(columns="y")
    data.loc[4, "x2"] = np.nan
    ids, scores = score_rows(model, data)
    assert ids.tolist() == list(range(9))
    assert np.max(np.abs(scores - reference_scores(model, data.drop(index=4)))) <= TOL


def test_score_rows_needs_every_feature(model):
    with pytest.raises(InvalidInput) as info:
        score_rows(model, make(10, 3).drop(columns="x2"))
    assert info.value.field == "dataset"


def node(data: pd.DataFrame, sink=None, k=10):
    con = duckdb.connect()
    con.register("frame", data)
    con.execute("CREATE TABLE analysis_data AS SELECT * FROM frame")
    return LocalContext(con, site="A", min_cell_size=k, score_sink=sink)


def test_score_analysis_keeps_scores_on_the_node(model):
    impl = registry.get("score")
    params = impl.parse_params({"model_id": 7, "bins": 10})
    data = make(200, 11)
    data["_person_id"] = np.arange(1, 201)
    stored = []
    ctx = node(data, lambda m, ids, scores: stored.append((m["id"], ids, scores)))
    partial = impl.local(ctx, params, {"model": model})
    outcome = impl.combine({"A": partial}, params, {}, 1)
    assert isinstance(outcome, Final)
    result = outcome.result
    expected = reference_scores(model, data)
    assert len(stored) == 1 and stored[0][0] == 7
    assert stored[0][1] == list(range(1, 201))
    assert np.max(np.abs(np.asarray(stored[0][2]) - expected)) <= TOL
    assert result["scored"] == 200 and result["model_id"] == 7
    counts = np.bincount(np.minimum((expected * 10).astype(int), 9), minlength=10)
    assert [row["n"] for row in result["histogram"]] == [
        None if 0 < c < 10 else int(c) for c in counts]
    assert np.count_nonzero(counts) >= 5  # a model that separates, with a suppressed cell
    assert any(0 < c < 10 for c in counts)
    assert result["sites"] == {"A": 200}


def test_score_analysis_refuses_a_foreign_model_and_small_sites(model):
    impl = registry.get("score")
    params = impl.parse_params({"model_id": 8})
    with pytest.raises(InvalidInput) as info:
        impl.local(node(make(50, 1)), params, {"model": model})
    assert info.value.field == "round_input.model"
    with pytest.raises(Refused, match="only 6 persons"):
        impl.local(node(make(6, 1)), impl.parse_params({"model_id": 7}), {"model": model})
