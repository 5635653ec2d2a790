"""Organisations, users and tokens: who may create whom."""

from __future__ import annotations

from hubkit import Hub, Space, bearer


def test_orgs_are_created_once_and_listed(hub: Hub) -> None:
    created = hub.ok(
        "POST",
        "/orgs",
        hub.operator,
        201,
        json={"name": "hosp-a", "kind": "hospital", "display_name": "Hospital A"},
    )
    assert created["created_at"] == "2025-03-01T09:00:00Z"
    again = hub.call("POST", "/orgs", hub.operator, json={"name": "hosp-a", "kind": "payer"})
    assert again.status_code == 409 and again.json()["detail"]["field"] == "name"
    names = [o["name"] for o in hub.ok("GET", "/orgs", hub.operator)]
    assert names == ["operator", "hosp-a"]


def test_data_holder_admin_creates_users_of_its_own_org_only(space: Space) -> None:
    hub = space.hub
    body = {"name": "nurse", "org": "hosp-a", "role": "data_holder_admin"}
    assert hub.ok("POST", "/users", space.admin_a, 201, json=body)["org"] == "hosp-a"
    body = {"name": "spy", "org": "hosp-b", "role": "consumer"}
    assert hub.call("POST", "/users", space.admin_a, json=body).status_code == 403
    body = {"name": "boss", "org": "hosp-a", "role": "operator"}
    response = hub.call("POST", "/users", space.admin_a, json=body)
    assert response.status_code == 403 and response.json()["detail"]["field"] == "role"
    users = {u["name"] for u in hub.ok("GET", "/users", space.auditor)}
    assert "nurse" in users and "spy" not in users and "boss" not in users


def test_duplicate_user_is_a_conflict(space: Space) -> None:
    body = {"name": "alice", "org": "pharma", "role": "consumer"}
    assert space.hub.call("POST", "/users", space.hub.operator, json=body).status_code == 409


def test_users_issue_tokens_for_themselves_only(space: Space) -> None:
    hub = space.hub
    mine = hub.ok("POST", "/tokens", space.alice, 201, json={"user": "alice", "label": "laptop"})
    assert (mine["principal"], mine["kind"]) == ("alice", "user")
    assert hub.ok("GET", "/me", bearer(mine["token"]))["name"] == "alice"
    assert hub.ok("GET", "/me", space.alice)["name"] == "alice"  # older token still valid
    response = hub.call("POST", "/tokens", space.alice, json={"user": "bob"})
    assert response.status_code == 403
    issued = hub.ok("POST", "/tokens", hub.operator, 201, json={"user": "bob"})
    assert hub.ok("GET", "/me", bearer(issued["token"]))["name"] == "bob"
