"""Authentication on every /api/v1 route, and the declared role table enforced route × role."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hubkit import Hub, Space, bearer

from healthspace.core.enums import PrincipalKind, Role
from healthspace.hub.app import api_permissions

DOC = Path(__file__).resolve().parents[3] / "docs" / "hub-api.md"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _operations(hub: Hub) -> list[tuple[str, str]]:
    """Every (METHOD, path) the running app serves under /api/v1, read from its OpenAPI."""
    paths = hub.client.get("/openapi.json").json()["paths"]
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        if path.startswith("/api/v1/")
        for method in item
    )


def test_permission_table_covers_every_served_route(hub: Hub) -> None:
    table = api_permissions()
    assert sorted(table) == _operations(hub)
    assert all(permission is not None for permission in table.values())


@pytest.mark.parametrize("token", [None, "hs_not-a-real-token", ""])
def test_every_api_route_needs_a_valid_token(hub: Hub, token: str | None) -> None:
    headers = bearer(token) if token is not None else {}
    for method, path in _operations(hub):
        response = hub.client.request(method, _concrete(path), headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"]["message"]


def test_non_bearer_scheme_is_rejected(hub: Hub) -> None:
    response = hub.client.get("/api/v1/me", headers={"Authorization": "Basic b3A6cHc="})
    assert response.status_code == 401


def test_every_route_refuses_every_principal_it_does_not_list(space: Space) -> None:
    """Walk route × principal: whoever the table excludes gets 403 before the body is read."""
    principals = {
        (PrincipalKind.USER, Role.OPERATOR): space.hub.operator,
        (PrincipalKind.USER, Role.CONSUMER): space.alice,
        (PrincipalKind.USER, Role.AUDITOR): space.auditor,
        (PrincipalKind.USER, Role.DATA_HOLDER_ADMIN): space.admin_a,
        (PrincipalKind.NODE, None): space.node_a,
    }
    refused = 0
    for (method, path), permission in api_permissions().items():
        assert permission is not None
        for (kind, role), headers in principals.items():
            if permission.allows(kind, role):
                continue
            response = space.hub.client.request(method, _concrete(path), headers=headers, json={})
            assert response.status_code == 403, (method, path, role or kind, response.text)
            assert "needs one of" in response.json()["detail"]["message"]
            refused += 1
    assert refused > 20


def test_representative_role_checks(space: Space) -> None:
    hub = space.hub
    org = {"name": "newco", "kind": "consumer"}
    assert hub.call("POST", "/orgs", space.alice, json=org).status_code == 403
    assert hub.call("POST", "/orgs", space.auditor, json=org).status_code == 403
    assert hub.call("GET", "/orgs", space.auditor).status_code == 200
    assert hub.call("GET", "/users", space.node_a).status_code == 403
    assert hub.call("GET", "/node/tasks/next", space.alice).status_code == 403
    message = hub.call("POST", "/studies", space.auditor, json={}).json()["detail"]["message"]
    assert "consumer" in message and "operator" in message


def test_me_for_users_and_nodes(space: Space) -> None:
    me = space.hub.ok("GET", "/me", space.admin_a)
    assert isinstance(me.pop("id"), int)
    assert me == {
        "name": "admin-a",
        "kind": "user",
        "role": "data_holder_admin",
        "org": "hosp-a",
    }
    me = space.hub.ok("GET", "/me", space.node_a)
    assert isinstance(me.pop("id"), int)
    assert me == {
        "name": "node-a",
        "kind": "node",
        "role": None,
        "org": "hosp-a",
    }


def test_every_route_and_role_is_documented(hub: Hub) -> None:
    text = DOC.read_text(encoding="utf-8")
    for (method, path), permission in api_permissions().items():
        row = next((line for line in text.splitlines() if f"`{method} {path}`" in line), None)
        assert row is not None, f"{method} {path} missing from {DOC.name}"
        assert permission is not None
        for who in permission.describe().split(", "):
            assert who in row, f"{method} {path}: {who} not in documented roles"
