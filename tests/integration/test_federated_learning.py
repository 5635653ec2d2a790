"""Federated learning end to end through the real hub and node processes: train under secure
aggregation, follow progress, register, read the model card, deploy back to the nodes.

References: the in-process simulation over the same OMOP folders (the same model to
fixed-point precision) and the exact Mann–Whitney AUC of that model's predictions on the
pooled analysis tables, built independently of the nodes.
"""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from healthspace.cdm.store import state_path
from healthspace.client.studyfile import load_study_file
from healthspace.core.encoding import decode_array
from healthspace.learning.features import Preparation
from healthspace.learning.models import Architecture, predict
from healthspace.sim import simulate_dirs

from .conftest import HOSPITALS, ROSSI_NODES
from .helpers import cli
from .test_statistics import EXAMPLES, pooled_tables

pytestmark = [pytest.mark.xdist_group("federation"), pytest.mark.slow]


def _study():
    spec = load_study_file(EXAMPLES / "t2d_complication_fl_study.yaml")
    body = spec.model_dump(mode="json") | {"nodes": HOSPITALS}
    body["params"] = body["params"] | {"rounds": 6, "model_name": "t2d-kidney-e2e"}
    return body


@pytest.fixture(scope="module")
def trained(live):
    body = _study()
    with live.consumer() as client:
        view = client.submit(body)
        seen: list[dict] = []
        while not view.status.terminal:
            seen = [e.entry for e in client.progress(view.id).entries]
            view = client.study(view.id, wait=5)
        progress = client.progress(view.id)
    assert view.status.value == "completed", (view.error, [(t.node, t.error) for t in view.tasks])
    return body, view, progress, seen


def test_training_matches_the_simulation_and_the_pooled_auc(live, trained):
    body, view, progress, _ = trained
    result = view.result
    assert result["secure_aggregation"] is True
    assert "weights" not in result["model"]  # weights live in the registry only
    sim = simulate_dirs("fl_train", {n: live.data / n for n in HOSPITALS}, params=body["params"],
                        cohort=body["cohort"], dataset=body["dataset"], secure=False)
    for ours, ref in zip(result["rounds"], sim["rounds"], strict=True):
        assert ours["round"] == ref["round"]
        assert abs(ours["loss"] - ref["loss"]) < 1e-9
        assert abs(ours["auc"] - ref["auc"]) < 1e-9
    # The hub's histogram AUC against the exact AUC of the same model on the pooled tables.
    tables = pooled_tables(live, body["cohort"], body["dataset"])
    pooled = pd.concat(tables.values(), ignore_index=True)
    prep = Preparation.from_dict(sim["model"]["preparation"])
    features = list(prep.features)
    rows = pooled.dropna(subset=[*features, "complication"]).reset_index(drop=True)
    holdout = np.concatenate([
        np.random.default_rng([1, 0x7A11D]).random(
            len(t.dropna(subset=[*features, "complication"]))) < 0.2
        for t in tables.values()])
    p = predict(Architecture.from_dict(sim["model"]["architecture"]),
                decode_array(sim["model"]["weights"]), prep.encode(rows))
    y = rows["complication"].to_numpy(dtype=float)
    train_p, train_y = p[~holdout], y[~holdout]
    u = mannwhitneyu(train_p[train_y == 1], train_p[train_y == 0]).statistic
    exact = u / ((train_y == 1).sum() * (train_y == 0).sum())
    metrics = result["metrics"]
    assert metrics["n"] == len(train_y)
    assert abs(metrics["auc"] - exact) <= metrics["auc_binning_error"] + 1e-12
    assert abs(metrics["brier"] - float(np.mean((train_p - train_y) ** 2))) < 1e-9
    assert result["validation"]["n"] == int(holdout.sum())
    # Progress: one entry per training round (the last one comes with the final evaluation),
    # each with all three nodes reporting.
    entries = [e.entry for e in progress.entries]
    assert [e["round"] for e in entries] == list(range(1, 7))
    assert all(e["nodes"] == 3 and e["loss"] > 0 for e in entries)
    assert entries[-1]["final"] is True


def test_the_model_is_registered_with_card_and_contribution(live, trained):
    body, view, _, _ = trained
    model_id = view.result["model"]["id"]
    with live.consumer() as client:
        listed = client.models("t2d-kidney-e2e")
        card = client.model(model_id)
    assert [m.id for m in listed] == [model_id]
    assert card.study_id == view.id and card.version == 1 and card.kind == "logistic"
    assert card.release == "deploy"  # the nodes' default policy
    assert sorted(card.nodes) == HOSPITALS
    tables = pooled_tables(live, body["cohort"], body["dataset"])
    for name, table in tables.items():  # contribution = metered persons = usable rows
        usable = len(table.dropna(subset=[*body["params"]["features"], "complication"]))
        assert card.contribution[name]["persons"] == usable
        assert card.card.performance_by_site[name]["n"] == usable
    assert card.card.intended_use.startswith("Five-year risk")
    assert card.metrics["auc"] == view.result["metrics"]["auc"]
    # deploy: nodes may fetch the weights, the consumer may not download them.
    proc = cli(live, "models", "download", str(model_id), "--out", "/dev/null", check=False)
    assert proc.returncode == 3 and "download" in proc.stderr


def test_a_score_study_writes_scores_on_the_node_only(live, trained):
    body, view, _, _ = trained
    model_id = view.result["model"]["id"]
    with live.consumer() as client:
        scored = client.wait(client.submit({
            "analysis": "score", "params": {"model_id": model_id}, "cohort": body["cohort"],
            "nodes": ["hospital_1"], "purpose": "research"}).id, timeout=120)
    assert scored.status.value == "completed", scored.error
    tables = pooled_tables(live, body["cohort"], body["dataset"])
    features = body["params"]["features"]
    expected = len(tables["hospital_1"].dropna(subset=features))
    assert scored.result["scored"] == expected
    assert sum(row["n"] or 0 for row in scored.result["histogram"]) <= expected
    store = live.fed.nodes["hospital_1"].store
    with sqlite3.connect(state_path(store)) as db:
        count, lo, hi = db.execute("SELECT COUNT(*), MIN(score), MAX(score) FROM model_scores "
                                   "WHERE model_id = ? AND study_id = ?",
                                   (model_id, scored.id)).fetchone()
    assert count == expected and 0 < lo <= hi < 1


def test_node_score_command_fetches_the_model_with_the_node_token(live, trained, tmp_path):
    body, view, _, _ = trained
    model_id = view.result["model"]["id"]
    node = live.fed.nodes["hospital_2"]
    cohort = tmp_path / "cohort.json"
    cohort.write_text(json.dumps(body["cohort"]))
    proc = cli(live, "node", "score", "--store", str(node.store), "--model", str(model_id),
               "--cohort", str(cohort), "--purpose", "research", "--out",
               str(tmp_path / "scores.csv"), "--json", token=node.token)
    report = json.loads(proc.stdout)
    tables = pooled_tables(live, body["cohort"], body["dataset"])
    expected = len(tables["hospital_2"].dropna(subset=body["params"]["features"]))
    assert report["scored"] == expected
    assert len(pd.read_csv(tmp_path / "scores.csv")) == expected


def test_a_node_killed_mid_training_does_not_stop_training(live):
    """rossi_c is stopped after two rounds; its task times out and the others go on.

    The time-out leaves room for a node's first task, which imports the analysis modules."""
    body = {"analysis": "fl_train", "nodes": ROSSI_NODES, "round_timeout_seconds": 20,
            "params": {"target": "arrest", "features": ["fin", "age", "wexp", "prio"],
                       "rounds": 40, "batch_size": 16, "learning_rate": 0.05, "seed": 3}}
    try:
        with live.consumer() as client:
            view = client.submit(body)
            deadline = time.monotonic() + 120
            while len(client.progress(view.id).entries) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            live.fed.stop_node("rossi_c")
            view = client.wait(view.id, timeout=240)
    finally:
        live.fed.start_node("rossi_c")
        live.fed.wait_nodes_ready()
    assert view.status.value == "partial", (view.status, view.error)
    result = view.result
    assert "rossi_c" in (view.error or "") and "timed out" in view.error
    assert any("rossi_c" in w for w in result["warnings"])
    assert result["rounds"][-1]["round"] == 40
    assert result["rounds"][0]["nodes"] == 3 and result["rounds"][-1]["nodes"] == 2
    assert sorted(result["nodes"]) == ["rossi_a", "rossi_b"]
    assert result["metrics"]["auc"] > 0.55


def test_the_cli_trains_follows_and_shows_the_model(live, tmp_path):
    study = tmp_path / "train.json"
    study.write_text(json.dumps({
        "analysis": "fl_train", "nodes": ROSSI_NODES, "secure_aggregation": True,
        "params": {"target": "arrest", "features": ["fin", "age", "wexp", "mar", "prio"],
                   "model": "mlp", "hidden": [8], "strategy": "fedprox", "mu": 0.05,
                   "rounds": 4, "batch_size": 16, "model_name": "rossi-cli"}}))
    proc = cli(live, "study", "submit", str(study), "--wait")
    assert "Training rounds" in proc.stdout and "registered as model" in proc.stdout
    assert "training" in proc.stderr and "AUC" in proc.stderr  # the live progress bar
    listed = json.loads(cli(live, "models", "list", "--name", "rossi-cli", "--json").stdout)
    assert len(listed) == 1 and listed[0]["kind"] == "mlp"
    model = listed[0]
    assert model["secure_aggregation"] is True and model["rounds"] == 4
    shown = cli(live, "models", "show", str(model["id"])).stdout
    assert "contribution" in shown and "rossi-cli v1" in shown
    report = json.loads(cli(live, "study", "progress", str(model["study_id"]), "--json").stdout)
    assert [e["entry"]["round"] for e in report["entries"]] == [1, 2, 3, 4]
    assert report["total_rounds"] == 4
