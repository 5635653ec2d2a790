"""``healthspace sim train``: the JSON contract, the table view and errors that exit 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import special

from healthspace.cli.main import run
from healthspace.core.encoding import decode_array
from healthspace.sim import simulate_tables


@pytest.fixture
def tables(tmp_path):
    paths = {}
    for name, seed in (("A", 1), ("B", 2)):
        rng = np.random.default_rng(seed)
        x1, x2 = rng.normal(size=250), rng.normal(3, 2, 250)
        y = (rng.uniform(size=250) < special.expit(1.2 * x1 - 0.5 * (x2 - 3))).astype(int)
        paths[name] = tmp_path / f"{name}.csv"
        pd.DataFrame({"x1": x1, "x2": x2, "y": y}).to_csv(paths[name], index=False)
    return paths


def argv_for(paths, *extra, target="y", features="x1,x2"):
    argv = ["sim", "train"]
    for name, path in paths.items():
        argv += ["--table", f"{name}={path}"]
    return [*argv, "--target", target, "--features", features, *extra]


def one_json_object(text: str) -> dict:
    decoder = json.JSONDecoder()
    doc, end = decoder.raw_decode(text.lstrip())
    assert text.lstrip()[end:].strip() == "", "more than one JSON document on stdout"
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize(("model", "strategy"), [("logistic", "fedavg"), ("mlp", "fedprox")])
def test_json_contract(tables, capsys, model, strategy):
    argv = argv_for(tables, "--model", model, "--strategy", strategy, "--rounds", "3",
                    "--seed", "1", "--json")
    assert run(argv) == 0
    captured = capsys.readouterr()
    doc = one_json_object(captured.out)
    assert "Traceback" not in captured.err
    assert 0.5 < doc["metrics"]["auc"] <= 1
    assert [r["round"] for r in doc["rounds"]] == [1, 2, 3]
    for entry in doc["rounds"]:
        assert 0 < entry["loss"] < 1 and 0 < entry["auc"] <= 1
    assert doc["model"]["architecture"]["kind"] == model
    assert doc["hyperparameters"]["strategy"] == strategy
    assert doc["nodes"] == ["A", "B"]
    # The CLI runs exactly the analysis the library runs.
    direct = simulate_tables("fl_train", tables, params={
        "target": "y", "features": ["x1", "x2"], "model": model, "strategy": strategy,
        "rounds": 3, "seed": 1})
    assert np.array_equal(decode_array(doc["model"]["weights"]),
                          decode_array(direct["model"]["weights"]))
    assert doc["metrics"]["auc"] == direct["metrics"]["auc"]


def test_table_view_and_saved_model(tables, tmp_path, capsys):
    saved = tmp_path / "model.json"
    argv = argv_for(tables, "--rounds", "2", "--save-model", str(saved))
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "auc" in out.lower()
    model = json.loads(saved.read_text())
    assert model["columns"] == ["x1", "x2"] and model["target"] == "y"
    assert decode_array(model["weights"]).shape == (3,)


@pytest.mark.parametrize(("extra", "names", "field"), [
    ([], {"features": "x1,nosuch"}, "params.features"),
    ([], {"target": "nosuch"}, "params.target"),
    (["--model", "svm"], {}, "params.model"),
    (["--strategy", "fedsgd"], {}, "params.strategy"),
    (["--rounds", "0"], {}, "params.rounds"),
    (["--holdout", "0.9"], {}, "params.holdout"),
    (["--model", "mlp", "--hidden", "8,x"], {}, "hidden"),
])
def test_bad_option_exits_2_naming_the_field(tables, capsys, extra, names, field):
    assert run(argv_for(tables, "--json", *extra, **names)) == 2
    captured = capsys.readouterr()
    assert field in captured.err
    if names:
        assert "nosuch" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out.strip() == ""
