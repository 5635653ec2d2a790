"""The model registry: a finished fl_train study registers its model (weights out of the study
result), cards and lists by visibility, weights released as the contributing nodes' policies
allow (every release and refusal audited), score studies deployed from it, study progress.

Training is real: each site answers its tasks with the partial the real ``fl_train`` code
computes (``run_local``) on a small synthetic ``analysis_data`` table it holds in DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flkit import ROWS, SEEDS, answer, site_table
from hubkit import COHORT, Headers, Hub, Space, copy_space

from healthspace.core.encoding import decode_array
from healthspace.learning.models import Architecture

TRAIN = {"target": "y", "features": ["x1", "x2"], "rounds": 2, "model_name": "risk"}
# fl_train's hub rounds for 2 training rounds: statistics, moments, training round 1,
# training round 2 (evaluates w1), final evaluation of w2
HUB_ROUNDS = 5
DATASET = {
    "covariates": [{"name": "x1", "type": "age"}, {"name": "x2", "type": "sex"}],
    "outcome": {"type": "binary", "condition": {"codes": ["ICD10:E11.2%"]},
                "window": {"start": 1, "end": 1825}, "event": "y"},
}


# ---------------------------------------------------------------- sites and training


def sites(space: Space) -> dict[str, Headers]:
    return {"node-a": space.node_a, "node-b": space.node_b}


def run_study(space: Space, study: dict[str, Any],
              skip: Callable[[str, dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Let node-a and node-b take and answer tasks until the study ends; ``skip(name, task)``
    True makes that node fail the task instead. Returns the final study view."""
    hub, cons = space.hub, {name: site_table(name) for name in SEEDS}
    for _ in range(4 * HUB_ROUNDS):
        view = hub.study(hub.operator, study["id"])
        if view["status"] != "running":
            return view
        for name, headers in sites(space).items():
            task = hub.next_task(headers)
            if task is None:
                continue
            if skip is not None and skip(name, task):
                hub.post(headers, task["task_id"], status="failed", error="disk full")
            else:
                answer(hub, name, headers, task, cons[name])
    raise AssertionError(f"study {study['id']} did not finish")


def train(space: Space, who: Headers | None = None, **spec: Any) -> dict[str, Any]:
    """Submit an fl_train study to node-a and node-b and run it to the end."""
    params = {**TRAIN, **spec.pop("params", {})}
    study = space.hub.submit(who or space.alice, analysis="fl_train",
                             nodes=["node-a", "node-b"], params=params, **spec)
    assert study["status"] == "running", study
    view = run_study(space, study)
    assert view["status"] == "completed", view["error"]
    return view


def publish_release(space: Space, release_a: str, release_b: str) -> None:
    """Version 2 of node-a's and node-b's (automatically approving) policies."""
    space.hub.publish_policy(space.node_a, {"level": "L1", "version": 2,
                                            "model_release": release_a})
    space.hub.publish_policy(space.node_b, {"level": "L1", "version": 2,
                                            "model_release": release_b})


def audit_of(hub: Hub, action: str, subject: str) -> list[str]:
    """Actors of the ledger entries with this action and subject, in order."""
    entries = hub.ok("GET", "/audit/entries?limit=1000", hub.operator)
    return [e["actor"] for e in entries if e["action"] == action and e["subject"] == subject]


# ---------------------------------------------------------------- fixtures


@dataclass
class Trained:
    space: Space
    study: dict[str, Any]  # the training study's final view, as its submitter (alice) sees it
    model: int


@pytest.fixture(scope="module")
def templates(space_template: Space,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Trained]]:
    """Trained spaces, built once per policy variant and copied per test."""
    cache: dict[tuple[str, str, bool], Trained] = {}

    def get(release_a: str = "deploy", release_b: str = "deploy",
            with_dataset: bool = False) -> Trained:
        key = (release_a, release_b, with_dataset)
        if key not in cache:
            space = copy_space(space_template, tmp_path_factory.mktemp("trained"))
            if (release_a, release_b) != ("deploy", "deploy"):
                publish_release(space, release_a, release_b)
            spec = {"cohort": COHORT, "dataset": DATASET} if with_dataset else {}
            view = train(space, **spec)
            view = space.hub.study(space.alice, view["id"])
            cache[key] = Trained(space, view, int(view["result"]["model"]["id"]))
        return cache[key]

    yield get
    for trained in cache.values():
        trained.space.hub.close()


@pytest.fixture
def trained(templates: Callable[..., Trained],
            tmp_path: Path) -> Iterator[Callable[..., Trained]]:
    """A private copy of a trained space: ``trained(release_a, release_b, with_dataset)``."""
    opened: list[Space] = []

    def get(release_a: str = "deploy", release_b: str = "deploy",
            with_dataset: bool = False) -> Trained:
        template = templates(release_a, release_b, with_dataset)
        folder = tmp_path / f"{release_a}-{release_b}-{with_dataset}"
        folder.mkdir()
        space = copy_space(template.space, folder)
        opened.append(space)
        return Trained(space, template.study, template.model)

    yield get
    for space in opened:
        space.hub.close()


def outsiders(space: Space) -> tuple[Headers, Headers]:
    """carol, a consumer of another organisation; and the payer's data-holder admin (its node
    trained nothing)."""
    space.hub.org("biotech", "consumer")
    carol = space.hub.user("carol", "biotech", "consumer")
    admin_p = space.hub.user("admin-p", "payer", "data_holder_admin")
    return carol, admin_p


# ---------------------------------------------------------------- registration


def test_a_finished_training_registers_its_model_without_weights_in_the_result(
    trained: Callable[..., Trained],
) -> None:
    t = trained()
    hub, result = t.space.hub, t.study["result"]
    reference = result["model"]
    assert reference == {"id": t.model, "name": "risk", "version": 1, "release": "deploy",
                         "architecture": {"kind": "logistic", "inputs": 2, "hidden": []},
                         "columns": ["x1", "x2"], "target": "y"}
    assert "weights" not in reference
    registered = [e for e in t.study["timeline"] if e["event"] == "model_registered"]
    assert [e["detail"] for e in registered] == [{"model_id": t.model, "name": "risk",
                                                 "version": 1, "release": "deploy"}]

    listed = hub.ok("GET", "/models", t.space.alice)["models"]
    assert [(m["id"], m["name"], m["version"]) for m in listed] == [(t.model, "risk", 1)]
    card = hub.ok("GET", f"/models/{t.model}", t.space.alice)
    assert card == listed[0]
    assert "weights" not in card
    assert (card["study_id"], card["kind"], card["owner"]) == (t.study["id"], "logistic",
                                                               "pharma")
    assert card["nodes"] == ["node-a", "node-b"]
    assert (card["rounds"], card["selected_round"]) == (2, 2)
    assert card["metrics"] == result["metrics"]
    assert card["card"]["performance"]["auc"] == result["metrics"]["auc"]
    assert 0.5 < card["card"]["performance"]["auc"] <= 1
    assert card["card"]["performance_by_site"] == result["sites"]
    assert card["card"]["training_population"]["n_train"] == 2 * ROWS
    assert (card["card"]["target"], card["card"]["features"]) == ("y", ["x1", "x2"])
    assert card["contribution"] == {"node-a": {"persons": ROWS, "band": None},
                                    "node-b": {"persons": ROWS, "band": None}}
    assert card["hyperparameters"]["rounds"] == 2 and "model_name" not in card[
        "hyperparameters"]

    # the weights exist (a node may fetch them) but appear nowhere in the study's view
    weights = hub.ok("GET", f"/models/{t.model}/weights", t.space.node_a)["weights"]
    view = hub.call("GET", f"/studies/{t.study['id']}", t.space.alice)
    assert weights["data"] not in view.text

    # the same model name trains a new version; the list is newest first
    second = train(t.space)
    assert second["result"]["model"]["name"] == "risk"
    assert second["result"]["model"]["version"] == 2
    listed = hub.ok("GET", "/models?name=risk", t.space.alice)["models"]
    assert [(m["name"], m["version"], m["study_id"]) for m in listed] == [
        ("risk", 2, second["id"]), ("risk", 1, t.study["id"])]
    assert hub.ok("GET", "/models?name=other", t.space.alice)["models"] == []


# ---------------------------------------------------------------- visibility


def test_models_are_visible_to_their_organisation_contributors_and_overseers(
    trained: Callable[..., Trained],
) -> None:
    t = trained()
    space, hub = t.space, t.space.hub
    carol, admin_p = outsiders(space)
    for who in (space.alice, space.bob, space.admin_a, space.admin_b, space.auditor,
                hub.operator):
        assert hub.ok("GET", f"/models/{t.model}", who)["id"] == t.model
        assert [m["id"] for m in hub.ok("GET", "/models", who)["models"]] == [t.model]
    for who in (carol, admin_p):
        response = hub.call("GET", f"/models/{t.model}", who)
        assert response.status_code == 403, response.text
        assert hub.ok("GET", "/models", who)["models"] == []
    assert hub.call("GET", "/models/999", hub.operator).status_code == 404


# ---------------------------------------------------------------- release of weights


def test_deploy_releases_weights_to_nodes_only_and_every_decision_is_audited(
    trained: Callable[..., Trained],
) -> None:
    t = trained()
    space, hub = t.space, t.space.hub
    package = hub.ok("GET", f"/models/{t.model}/weights", space.node_a)
    assert (package["id"], package["name"], package["version"]) == (t.model, "risk", 1)
    assert package["columns"] == ["x1", "x2"] and package["target"] == "y"
    arch = Architecture.from_dict(package["architecture"])
    weights = decode_array(package["weights"])
    assert weights.shape == (arch.size,) == (3,)  # two standardised features and an intercept
    assert np.all(np.isfinite(weights))
    assert hub.ok("GET", f"/models/{t.model}/weights", space.node_b) == package

    response = hub.call("GET", f"/models/{t.model}/weights", space.alice)
    assert response.status_code == 403
    assert "download" in response.json()["detail"]["message"]
    assert hub.call("GET", f"/models/{t.model}/weights", space.admin_a).status_code == 403

    subject = f"model:{t.model}"
    assert audit_of(hub, "model.download", subject) == ["node-a", "node-b"]
    assert audit_of(hub, "model.download_refused", subject) == ["alice", "admin-a"]


def test_download_everywhere_lets_the_training_organisation_download(
    trained: Callable[..., Trained],
) -> None:
    t = trained("download", "download")
    space, hub = t.space, t.space.hub
    assert t.study["result"]["model"]["release"] == "download"
    assert hub.ok("GET", f"/models/{t.model}", space.alice)["release"] == "download"
    package = hub.ok("GET", f"/models/{t.model}/weights", space.alice)
    assert hub.ok("GET", f"/models/{t.model}/weights", space.bob) == package
    assert hub.ok("GET", f"/models/{t.model}/weights", space.node_a) == package
    assert decode_array(package["weights"]).shape == (3,)
    for who in (space.admin_a, hub.operator):  # neither the training organisation nor a node
        assert hub.call("GET", f"/models/{t.model}/weights", who).status_code == 403
    subject = f"model:{t.model}"
    assert audit_of(hub, "model.download", subject) == ["alice", "bob", "node-a"]
    assert len(audit_of(hub, "model.download_refused", subject)) == 2


def test_none_at_one_node_keeps_the_weights_in_the_registry(
    trained: Callable[..., Trained],
) -> None:
    t = trained("download", "none")  # the strictest contributing policy wins
    space, hub = t.space, t.space.hub
    assert t.study["result"]["model"]["release"] == "none"
    assert hub.ok("GET", f"/models/{t.model}", space.alice)["release"] == "none"
    for who in (space.node_a, space.node_b, space.alice, space.bob):
        response = hub.call("GET", f"/models/{t.model}/weights", who)
        assert response.status_code == 403, response.text
    node_refusal = hub.call("GET", f"/models/{t.model}/weights", space.node_a).json()
    assert "none" in node_refusal["detail"]["message"]
    subject = f"model:{t.model}"
    assert audit_of(hub, "model.download", subject) == []
    assert audit_of(hub, "model.download_refused", subject) == [
        "node-a", "node-b", "alice", "bob", "node-a"]


def test_a_node_dropped_mid_training_still_governs_the_release(space: Space) -> None:
    hub = space.hub
    publish_release(space, "download", "none")
    study = hub.submit(space.alice, analysis="fl_train", nodes=["node-a", "node-b"],
                       params=TRAIN)
    # node-b answers the statistics, the moments and training round 1, then fails
    view = run_study(space, study, skip=lambda name, task: name == "node-b"
                     and task["round"] == 4)
    assert view["status"] == "partial"
    result = view["result"]
    assert result["population"]["n_train"] == 2 * ROWS  # node-b's rows are in the model
    model = hub.ok("GET", f"/models/{result['model']['id']}", space.alice)
    assert model["contribution"]["node-b"]["persons"] == ROWS
    assert "node-b" in model["nodes"]
    assert model["release"] == "none"
    weights = hub.call("GET", f"/models/{model['id']}/weights", space.alice)
    assert weights.status_code == 403


# ---------------------------------------------------------------- score studies


def score(hub: Hub, who: Headers, model_id: Any, **spec: Any) -> Any:
    body = {"analysis": "score", "params": {"model_id": model_id}, "nodes": ["node-a", "node-b"],
            **spec}
    return hub.call("POST", "/studies", who, json=body)


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    detail: dict[str, Any] = response.json()["detail"]
    return detail


def test_score_submission_checks_the_model(trained: Callable[..., Trained]) -> None:
    t = trained()
    space, hub = t.space, t.space.hub
    carol, _ = outsiders(space)
    before = len(hub.ok("GET", "/studies", hub.operator)["studies"])

    unknown = _error(score(hub, space.alice, 999), 422)
    assert unknown["field"] == "params.model_id" and "999" in unknown["message"]
    other_org = _error(score(hub, carol, t.model), 403)
    assert "pharma" in other_org["message"]
    # with a cohort, the study must say what to build from it: the model has no dataset
    assert _error(score(hub, space.alice, t.model, cohort=COHORT), 422)["field"] == "dataset"
    assert len(hub.ok("GET", "/studies", hub.operator)["studies"]) == before


def test_score_refused_when_the_model_may_not_leave_the_registry(
    trained: Callable[..., Trained],
) -> None:
    t = trained("download", "none")
    detail = _error(score(t.space.hub, t.space.alice, t.model), 403)
    assert "none" in detail["message"]


def test_score_tasks_carry_the_registered_model_and_score_on_the_nodes(
    trained: Callable[..., Trained],
) -> None:
    t = trained()
    space, hub = t.space, t.space.hub
    package = hub.ok("GET", f"/models/{t.model}/weights", space.node_a)

    # the model was trained on the sites' own analysis_data (no cohort): so is it scored
    study = score(hub, space.bob, t.model)  # any consumer of the owner organisation
    assert study.status_code == 201, study.text
    assert (study.json()["cohort"], study.json()["dataset"]) == (None, None)
    cons = {name: site_table(name) for name in SEEDS}
    for name, headers in sites(space).items():
        task = hub.next_task(headers)
        assert task is not None and task["analysis"] == "score" and task["round"] == 1
        model = task["round_input"]["model"]
        assert model == {"id": t.model, "name": "risk", "version": 1,
                         "architecture": package["architecture"],
                         "preparation": package["preparation"], "weights": package["weights"]}
        answer(hub, name, headers, task, cons[name])
    done = hub.study(space.bob, study.json()["id"])
    assert done["status"] == "completed", done["error"]
    assert done["result"]["model_id"] == t.model
    assert done["result"]["scored"] == 2 * ROWS
    assert done["result"]["sites"] == {"node-a": ROWS, "node-b": ROWS}
    assert sum(b["n"] or 0 for b in done["result"]["histogram"]) <= 2 * ROWS

    # with a cohort and an analysis dataset it is accepted as given
    given = score(hub, space.alice, t.model, cohort=COHORT, dataset=DATASET)
    assert given.status_code == 201, given.text
    task = hub.next_task(space.node_a)
    assert task is not None and task["study_id"] == given.json()["id"]
    assert (task["cohort"], task["dataset"]) == (COHORT, DATASET)
    assert task["round_input"]["model"]["weights"] == package["weights"]


def test_a_score_study_builds_the_models_own_dataset(trained: Callable[..., Trained]) -> None:
    t = trained(with_dataset=True)
    space, hub = t.space, t.space.hub
    assert hub.ok("GET", f"/models/{t.model}", space.alice)["dataset"] == DATASET
    package = hub.ok("GET", f"/models/{t.model}/weights", space.node_a)
    assert package["dataset"] == DATASET

    # the model's dataset needs the cohort to build from
    assert _error(score(hub, space.alice, t.model), 422)["field"] == "cohort"
    study = score(hub, space.alice, t.model, cohort=COHORT)
    assert study.status_code == 201, study.text
    assert study.json()["dataset"] == DATASET
    task = hub.next_task(space.node_b)
    assert task is not None and task["study_id"] == study.json()["id"]
    assert (task["cohort"], task["dataset"]) == (COHORT, DATASET)
    assert task["round_input"]["model"]["weights"] == package["weights"]


# ---------------------------------------------------------------- progress


def test_progress_reports_each_training_round(trained: Callable[..., Trained]) -> None:
    t = trained()
    space, hub = t.space, t.space.hub
    carol, _ = outsiders(space)
    study_id = t.study["id"]
    progress = hub.ok("GET", f"/studies/{study_id}/progress", space.alice)
    assert (progress["study_id"], progress["analysis"], progress["status"]) == (
        study_id, "fl_train", "completed")
    assert (progress["round"], progress["total_rounds"]) == (HUB_ROUNDS, 2)
    assert progress["nodes_reporting"] == {str(r): 2 for r in range(1, HUB_ROUNDS + 1)}

    entries = progress["entries"]
    # training round 1 is evaluated in hub round 4, the chosen model in the final round 5
    assert [(e["round"], e["entry"]["round"]) for e in entries] == [(4, 1), (5, 2)]
    history = t.study["result"]["rounds"]
    for entry, expected in zip(entries, history, strict=True):
        assert entry["entry"]["loss"] == expected["loss"]
        assert entry["entry"]["auc"] == expected["auc"]
        assert entry["entry"]["nodes"] == 2 and entry["entry"]["dropped"] == []
    assert entries[-1]["entry"]["final"] is True
    assert entries[-1]["entry"]["auc"] == t.study["result"]["metrics"]["auc"]

    for who in (space.admin_a, space.auditor, hub.operator):
        assert hub.ok("GET", f"/studies/{study_id}/progress", who) == progress
    for who in (space.bob, carol):  # a consumer sees its own studies only
        assert hub.call("GET", f"/studies/{study_id}/progress", who).status_code == 403
    assert hub.call("GET", "/studies/999/progress", space.alice).status_code == 404
