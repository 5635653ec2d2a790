"""Specialty-disease registries at the hub: registration and versions, who sees what, the
nodes' signed status reports, and studies that name a registry instead of a cohort."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hubkit import Space

from healthspace.client.studyfile import read_document
from healthspace.core.registry_defs import definition_digest

EXAMPLES = Path(__file__).resolve().parents[3] / "src" / "healthspace" / "examples" / "registries"


def _example(name: str = "t2d_complications") -> dict[str, Any]:
    return read_document(EXAMPLES / f"{name}.yaml")


def _register(space: Space, spec: dict[str, Any], expect: int = 201) -> dict[str, Any]:
    view: dict[str, Any] = space.hub.ok("POST", "/registries", space.hub.operator, expect,
                                        json=spec)
    return view


def _report(space: Space, node: dict[str, str], *items: dict[str, Any]) -> Any:
    envelope = space.hub.seal(node, "registry.status", {"registries": list(items)})
    return space.hub.call("PUT", "/node/registries", node, json=envelope)


def _problem(response: Any, status: int = 422) -> tuple[str, str]:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    return detail["field"], detail["message"]


def test_register_is_idempotent_and_a_change_is_a_new_version(space: Space) -> None:
    spec = _example()
    first = _register(space, spec)
    assert (first["name"], first["version"], first["created_by"]) == (
        "t2d_complications", 1, "operator")
    assert first["digest"] == definition_digest(spec["cohort"], spec["dataset"])
    assert first["participants"] == ["node-a", "node-b"]  # hospitals holding data, not payer
    assert first["status"]["node-a"] == {
        "node": "node-a", "version": None, "current": False, "size": None,
        "dataset_size": None, "refreshed_at": None, "reported_at": None, "error": None}
    again = _register(space, spec, expect=200)  # the same definition: nothing new
    assert again["version"] == 1 and again["created_at"] == first["created_at"]
    space.hub.clock.advance(seconds=60)
    retitled = _register(space, {**spec, "title": "T2D complications (v2)"})
    assert retitled["version"] == 2 and retitled["digest"] == first["digest"]
    assert retitled["first_registered_at"] == first["created_at"]
    changed = copy.deepcopy(spec)
    changed["dataset"]["covariates"].pop()
    third = _register(space, {**changed, "nodes": ["node-a"]})
    assert third["version"] == 3 and third["digest"] != first["digest"]
    assert third["participants"] == ["node-a"] and list(third["status"]) == ["node-a"]
    entries = space.hub.ok("GET", "/audit/entries?limit=1000", space.auditor)
    actions = [(e["action"], e["subject"]) for e in entries if e["action"].startswith("registry")]
    assert actions == [("registry.register", "registry:t2d_complications")] + [
        ("registry.version", "registry:t2d_complications")] * 2


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "T2D Registry"}, "body.name"),
    ({"cohort": {"entry": {"condition": {"codes": ["E11"]}}}}, "cohort.entry.condition.codes"),
    ({"cohort": {"inclusion": []}}, "cohort.entry"),
    ({"dataset": {"covariates": [{"name": "age", "type": "height"}]}},
     "dataset.covariates[0].type"),
    ({"dataset": {}}, "dataset"),
    ({"refresh": {"every_hours": 0}}, "body.refresh.every_hours"),
    ({"nodes": ["node-a", "nowhere"]}, "nodes[1]"),
    ({"nodes": []}, "body.nodes"),
    ({"colour": "blue"}, "body.colour"),
])
def test_bad_registrations_name_the_field(space: Space, change: dict[str, Any],
                                          field: str) -> None:
    response = space.hub.call("POST", "/registries", space.hub.operator,
                              json={**_example(), **change})
    assert _problem(response)[0] == field
    assert space.hub.ok("GET", "/registries", space.alice) == {"registries": []}


def test_only_the_operator_registers(space: Space) -> None:
    for who in (space.alice, space.admin_a, space.auditor, space.node_a):
        response = space.hub.call("POST", "/registries", who, json=_example())
        assert response.status_code == 403, response.text


def test_users_see_every_registry_and_nodes_those_they_take_part_in(space: Space) -> None:
    _register(space, _example())
    _register(space, {**_example("lung_cancer_lines"), "nodes": ["node-b"]})
    names = [r["name"] for r in space.hub.ok("GET", "/registries", space.alice)["registries"]]
    assert names == ["lung_cancer_lines", "t2d_complications"]
    seen_by_a = space.hub.ok("GET", "/registries", space.node_a)["registries"]
    assert [r["name"] for r in seen_by_a] == ["t2d_complications"]
    assert list(seen_by_a[0]["status"]) == ["node-a"]  # its own status only
    assert seen_by_a[0]["participants"] == ["node-a"]
    assert space.hub.ok("GET", "/registries", space.node_payer) == {"registries": []}
    assert space.hub.ok("GET", "/registries/lung_cancer_lines", space.auditor)["version"] == 1
    _problem(space.hub.call("GET", "/registries/lung_cancer_lines", space.node_a), 403)
    assert _problem(space.hub.call("GET", "/registries/nothing", space.alice), 404)[0] == "name"
    assert _problem(space.hub.call("GET", "/registries/Bad%20Name", space.alice))[0] == \
        "path.name"


def test_nodes_report_signed_rounded_sizes(space: Space) -> None:
    view = _register(space, _example())
    item = {"name": view["name"], "version": 1, "digest": view["digest"], "size": 1060,
            "dataset_size": "<10", "refreshed_at": "2025-03-01T08:00:00Z", "error": None}
    response = _report(space, space.node_a, item)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == ["t2d_complications"]
    status = space.hub.ok("GET", "/registries/t2d_complications", space.alice)["status"]
    assert status["node-a"]["size"] == 1060 and status["node-a"]["dataset_size"] == "<10"
    assert status["node-a"]["current"] is True
    assert status["node-b"]["version"] is None  # not reported yet
    # A new version makes node-a's materialisation stale until it reports again.
    _register(space, {**_example(), "title": "renamed"})
    status = space.hub.ok("GET", "/registries/t2d_complications", space.alice)["status"]
    assert status["node-a"]["version"] == 1 and status["node-a"]["current"] is False
    # A node that does not take part is not recorded.
    assert _report(space, space.node_payer, item).json()["accepted"] == []
    entries = space.hub.ok("GET", "/audit/entries?limit=1000", space.auditor)
    assert [e["subject"] for e in entries if e["action"] == "registry.status"] == [
        "node:node-a", "node:node-payer"]


@pytest.mark.parametrize(("change", "field"), [
    ({"size": 1063}, "payload.registries[0].size"),  # a raw count is never accepted
    ({"size": -10}, "payload.registries[0].size"),
    ({"dataset_size": "few"}, "payload.registries[0].dataset_size"),
    ({"name": "unknown"}, "payload.registries[0].name"),
    ({"version": 7}, "payload.registries[0].digest"),
    ({"digest": "ab" * 32}, "payload.registries[0].digest"),
    ({"refreshed_at": "2025-03-01T08:00:00"}, "payload.registries[0].refreshed_at"),
    ({"refreshed_at": "0001-01-01T00:00:00+14:00"}, "payload.registries[0].refreshed_at"),
])
def test_bad_reports_name_the_field(space: Space, change: dict[str, Any], field: str) -> None:
    view = _register(space, _example())
    item = {"name": view["name"], "version": 1, "digest": view["digest"], "size": 100}
    assert _problem(_report(space, space.node_a, {**item, **change}))[0] == field


def test_a_report_must_be_signed_by_the_node(space: Space) -> None:
    _register(space, _example())
    hub = space.hub
    envelope = hub.seal(space.node_a, "catalog", {"registries": []})  # the wrong kind
    assert _problem(hub.call("PUT", "/node/registries", space.node_a, json=envelope))[0] == \
        "kind"
    envelope = hub.seal(space.node_a, "registry.status", {"registries": []})
    envelope["payload"] = {"registries": [{"name": "t2d_complications"}]}  # altered
    assert _problem(hub.call("PUT", "/node/registries", space.node_a, json=envelope), 401)[0] \
        == "payload_digest"
    envelope = hub.seal(space.node_a, "registry.status", {"registries": []})
    assert hub.call("PUT", "/node/registries", space.node_a, json=envelope).status_code == 200
    assert _problem(hub.call("PUT", "/node/registries", space.node_a, json=envelope), 409)[0] \
        == "nonce"  # a replay


def test_a_study_naming_a_registry_gets_its_definition(space: Space) -> None:
    spec = _example()
    view = _register(space, spec)
    params = {"variables": ["age", "hba1c"], "categorical": ["first_line"]}
    study = space.hub.submit(space.alice, analysis="summary", registry="t2d_complications",
                             params=params)
    assert study["cohort"] == spec["cohort"] and study["dataset"] == spec["dataset"]
    assert study["registry"] == {"name": "t2d_complications", "version": 1,
                                 "digest": view["digest"]}
    assert study["nodes"] == ["node-a", "node-b"]
    submitted = next(e for e in study["timeline"] if e["event"] == "submitted")
    assert submitted["detail"]["registry"] == "t2d_complications"
    task = space.hub.next_task(space.node_a)
    assert task is not None and task["registry"] == study["registry"]
    assert task["cohort"] == spec["cohort"] and task["dataset"] == spec["dataset"]
    # A count takes the cohort only (it takes no dataset); the nodes may be narrowed.
    count = space.hub.ok("POST", "/studies", space.alice, 201, json={
        "analysis": "cohort_count", "registry": "t2d_complications", "nodes": ["node-b"]})
    assert count["cohort"] == spec["cohort"] and count["dataset"] is None
    assert count["registry"]["version"] == 1 and count["nodes"] == ["node-b"]
    # A new version: later studies use it, earlier ones keep theirs.
    _register(space, {**spec, "nodes": ["node-a"]})
    later = space.hub.ok("POST", "/studies", space.alice, 201, json={
        "analysis": "cohort_count", "registry": "t2d_complications"})
    assert later["registry"]["version"] == 2 and later["nodes"] == ["node-a"]
    again = space.hub.study(space.alice, study["id"])
    assert again["registry"]["version"] == 1


def test_policies_see_a_registry_study_as_the_inline_one(space: Space) -> None:
    spec = _example()
    _register(space, spec)
    space.hub.publish_policy(space.node_b, {"level": "L2", "version": 2})
    by_name = space.hub.ok("POST", "/studies/check", space.alice,
                           json={"analysis": "cohort_count", "registry": "t2d_complications"})
    inline = space.hub.ok("POST", "/studies/check", space.alice,
                          json={"analysis": "cohort_count", "cohort": spec["cohort"],
                                "nodes": ["node-a", "node-b"]})
    assert by_name == inline
    assert by_name["nodes"]["node-b"]["outcome"] == "needs_approval"


@pytest.mark.parametrize(("body", "field"), [
    ({"registry": "nothing"}, "registry"),
    ({"registry": "t2d_complications", "cohort": {"entry": {"condition": {
        "codes": ["ICD10:E11%"]}}}}, "registry"),
    ({"registry": "t2d_complications", "nodes": ["node-payer"]}, "nodes[0]"),
    ({"registry": "Not A Name"}, "body.registry"),
])
def test_bad_registry_studies_name_the_field(space: Space, body: dict[str, Any],
                                             field: str) -> None:
    _register(space, _example())
    response = space.hub.call("POST", "/studies", space.alice,
                              json={"analysis": "cohort_count", **body})
    assert _problem(response)[0] == field
    response = space.hub.call("POST", "/studies/check", space.alice,
                              json={"analysis": "cohort_count", **body})
    assert _problem(response)[0] == field
