"""Malformed requests get 422 naming the offending field — never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hubkit import COHORT, Hub, Space


def _field(response: Any) -> str:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["message"]
    return str(detail["field"])


def test_bad_org_kind_names_the_field(hub: Hub) -> None:
    response = hub.call("POST", "/orgs", hub.operator, json={"name": "x", "kind": "castle"})
    assert _field(response) == "body.kind"
    assert "body.kind" in response.json()["detail"]["message"]
    assert response.json()["errors"][0]["field"] == "body.kind"


def test_unknown_field_is_rejected(hub: Hub) -> None:
    body = {"name": "x", "kind": "hospital", "colour": "red"}
    assert _field(hub.call("POST", "/orgs", hub.operator, json=body)) == "body.colour"


def test_malformed_json_and_missing_body(hub: Hub) -> None:
    headers = {**hub.operator, "Content-Type": "application/json"}
    assert _field(hub.call("POST", "/orgs", headers, content=b"{nope")).startswith("body")
    assert _field(hub.call("POST", "/orgs", hub.operator)) == "body"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"analysis": "astrology", "cohort": COHORT}, "analysis"),
        (
            {"analysis": "cohort_count", "cohort": COHORT, "params": {"breakdown": "maybe"}},
            "params.breakdown",
        ),
        ({"analysis": "cohort_count", "cohort": COHORT, "params": {"colour": 1}}, "params.colour"),
        ({"analysis": "cohort_count"}, "cohort"),
        (
            {"analysis": "cohort_count", "cohort": {**COHORT, "inclusion": [{"age": {"min": -1}}]}},
            "cohort.inclusion[0].age.min",
        ),
        ({"analysis": "cohort_count", "cohort": {"entry": {}}}, "cohort.entry"),
        ({"analysis": "cohort_count", "cohort": COHORT, "nodes": ["node-a", "node-x"]}, "nodes[1]"),
        ({"analysis": "cohort_count", "cohort": COHORT, "nodes": []}, "body"),
        ({"analysis": "cohort_count", "cohort": COHORT, "purpose": ""}, "body.purpose"),
        (
            {"analysis": "glm", "params": {"formula": "y ~ x"}, "cohort": COHORT},
            "dataset",
        ),
        (
            {"analysis": "glm", "params": {"formula": "y ~ x"},
             "dataset": {"covariates": [{"name": "age", "type": "age"}]}},
            "cohort",
        ),
        (
            {"analysis": "cohort_count", "cohort": COHORT,
             "dataset": {"covariates": [{"name": "age", "type": "age"}]}},
            "dataset",
        ),
        ({"analysis": "glm", "params": {"formula": "y"}}, "params.formula"),
        ({"analysis": "km", "params": {"duration": "t"}}, "params.event"),
    ],
)
def test_study_spec_errors_name_the_field(space: Space, spec: dict[str, Any], field: str) -> None:
    assert _field(space.hub.call("POST", "/studies", space.alice, json=spec)) == field


def test_no_default_nodes_is_named(hub: Hub) -> None:
    hub.org("pharma", "consumer")
    alice = hub.user("alice", "pharma", "consumer")
    response = hub.call(
        "POST", "/studies", alice, json={"analysis": "cohort_count", "cohort": COHORT}
    )
    assert _field(response) == "nodes"


@pytest.mark.parametrize("query", ["wait=61", "wait=-1", "wait=soon"])
def test_wait_out_of_range(space: Space, query: str) -> None:
    response = space.hub.call("GET", f"/node/tasks/next?{query}", space.node_a)
    assert _field(response) == "query.wait"
    response = space.hub.call("GET", f"/studies/1?{query}", space.alice)
    assert _field(response) == "query.wait"


@pytest.mark.parametrize("query", ["limit=0", "limit=100000", "offset=-1", "status=lost"])
def test_list_bounds(space: Space, query: str) -> None:
    response = space.hub.call("GET", f"/studies?{query}", space.alice)
    assert _field(response) == f"query.{query.split('=')[0]}"


def test_bad_path_parameter(space: Space) -> None:
    assert _field(space.hub.call("GET", "/studies/abc", space.alice)) == "path.study_id"


def test_task_result_must_be_consistent(space: Space) -> None:
    hub = space.hub
    hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    response = hub.post_raw(space.node_a, task["task_id"], status="completed")
    assert _field(response) == "payload"
    assert "partial" in response.json()["detail"]["message"]
    response = hub.post_raw(space.node_a, task["task_id"], status="done", error="x")
    assert _field(response) == "payload.status"
    # a rejected payload spends no nonce and changes nothing: a good answer still lands
    assert hub.post(space.node_a, task["task_id"], status="failed", error="x")["duplicate"] is False


def test_unknown_purpose_names_the_field(space: Space) -> None:
    spec = {"analysis": "cohort_count", "cohort": COHORT, "purpose": "feasibility"}
    response = space.hub.call("POST", "/studies", space.alice, json=spec)
    assert _field(response) == "purpose"
    assert "research" in response.json()["detail"]["message"]
    assert _field(space.hub.call("POST", "/studies/check", space.alice, json=spec)) == "purpose"


def test_unknown_references_name_the_field(space: Space) -> None:
    hub = space.hub
    body = {"name": "carol", "org": "nowhere", "role": "consumer"}
    assert _field(hub.call("POST", "/users", hub.operator, json=body)) == "org"
    assert _field(hub.call("POST", "/tokens", hub.operator, json={"user": "nobody"})) == "user"
    body = {"name": "node-z", "org": "pharma"}
    response = hub.call("POST", "/nodes", hub.operator, json=body)
    assert _field(response) == "org"
    assert "data holder" in response.json()["detail"]["message"]


# Ids beyond the database's integer range reached the driver and failed inside the query
# (found by tests/integration/test_fuzz.py): they are refused as input instead.
@pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("GET", "/studies/{id}", "alice"),
        ("GET", "/studies/{id}/progress", "alice"),
        ("POST", "/studies/{id}/cancel", "alice"),
        ("POST", "/approvals/{id}/node-a/approve", "admin_a"),
        ("GET", "/models/{id}", "alice"),
        ("GET", "/models/{id}/weights", "alice"),
        ("GET", "/audit/proof/{id}", "auditor"),
    ],
)
@pytest.mark.parametrize("value", [2**31, 2**64, 10**40, 0])
def test_out_of_range_ids_are_refused(
    space: Space, method: str, path: str, who: str, value: int
) -> None:
    response = space.hub.call(method, path.format(id=value), getattr(space, who))
    assert _field(response).startswith("path.")


def test_out_of_range_task_id_is_refused(space: Space) -> None:
    envelope = space.hub.result_envelope(space.node_a, 1, status="failed", error="x")
    response = space.hub.call("POST", f"/node/tasks/{2**63}/result", space.node_a, json=envelope)
    assert _field(response) == "path.task_id"


@pytest.mark.parametrize(
    ("path", "who", "field"),
    [("/meter?study_id={v}", "alice", "query.study_id"),
     ("/audit/entries?start={v}", "auditor", "query.start")],
)
def test_out_of_range_id_queries_are_refused(space: Space, path: str, who: str,
                                             field: str) -> None:
    response = space.hub.call("GET", path.format(v=2**63), getattr(space, who))
    assert _field(response) == field


def test_largest_id_is_still_a_plain_not_found(space: Space) -> None:
    response = space.hub.call("GET", f"/studies/{2**31 - 1}", space.alice)
    assert response.status_code == 404, response.text
    assert response.json()["detail"]["message"]


def test_score_study_with_an_out_of_range_model_names_the_field(space: Space) -> None:
    spec = {"analysis": "score", "params": {"model_id": 2**64}, "nodes": ["node-a"]}
    response = space.hub.call("POST", "/studies", space.alice, json=spec)
    assert _field(response) == "params.model_id"
