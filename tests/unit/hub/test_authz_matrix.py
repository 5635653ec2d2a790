"""Every route × every principal → the expected status, from one table that must cover the app.

The table is walked in order on one populated space (rows that change state come last).
A route without a row fails the test, so a new endpoint cannot ship without its permissions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from hubkit import CC_PARTIAL, COHORT, Space
from nacl.signing import SigningKey

from healthspace.core.envelope import rotation_statement, seal
from healthspace.hub.app import api_permissions, other_permissions
from healthspace.ledger.checkpoint import sign_checkpoint
from healthspace.privacy.secagg_keys import make_prekey

WHO = ("operator", "admin", "other_admin", "consumer", "auditor", "node")
NAMES = {"operator": "operator", "admin": "admin-a", "other_admin": "admin-b",
         "consumer": "alice", "auditor": "audrey"}
SPEC = {"analysis": "cohort_count", "cohort": COHORT, "nodes": ["node-a"]}
REGISTRY = {"name": "gi-bleed", "title": "GI bleeding", "cohort": COHORT,
            "dataset": {"covariates": [{"name": "age", "type": "age"}]}}


@dataclass
class Ctx:
    space: Space
    done_study: int = 0
    done_task: int = 0
    model: int = 0
    made: list[int] = field(default_factory=list)

    def awaiting(self) -> int:
        """A fresh study of alice's waiting for node-a's approval."""
        study = self.space.hub.submit(self.space.alice, nodes=["node-a"])
        assert study["status"] == "awaiting_approval"
        return int(study["id"])

    def envelope(self, kind: str, payload: dict[str, Any], **ids: Any) -> dict[str, Any]:
        return self.space.hub.seal(self.space.node_a, kind, payload, **ids)

    def checkpoint(self) -> dict[str, Any]:
        hub = self.space.hub
        cp = sign_checkpoint(hub.keys["node-a"], "node-a", 1, "ab" * 32, "2026-01-01T00:00:00Z")
        return self.envelope("ledger.checkpoint", cp.to_dict())

    def prekeys(self) -> dict[str, Any]:
        _, prekey = make_prekey("node-a", self.space.hub.keys["node-a"])
        return self.envelope("secagg.prekeys", {"prekeys": [prekey.model_dump()]})

    def rotation(self) -> dict[str, Any]:
        hub = self.space.hub
        old, new = hub.keys["node-a"], SigningKey.generate()
        statement = rotation_statement(old, new, at=hub.clock.now())
        hub.keys["node-a"] = new  # the node's later envelopes are signed with the new key
        return seal("key.rotate", statement, old, node_id=hub.nodes["node-a"],
                    clock=hub.clock).model_dump(mode="json")


Path = str | Callable[[Ctx, str], str]
Body = Callable[[Ctx, str], Any] | None


def _only(allowed: dict[str, int]) -> dict[str, int]:
    return {who: allowed.get(who, 403) for who in WHO}


USERS_200 = _only({w: 200 for w in WHO if w != "node"})
ALL_200 = {w: 200 for w in WHO}

# (method, route template) -> (concrete path, body, expected status per principal)
MATRIX: list[tuple[str, str, Path, Body, dict[str, int]]] = [
    ("GET", "/api/v1/me", "/me", None, ALL_200),
    ("PUT", "/api/v1/me/password", "/me/password",
     lambda c, who: {"password": "a long console password"},
     {**_only({w: 204 for w in WHO if w != "node"})}),
    ("GET", "/api/v1/hub/key", "/hub/key", None, ALL_200),
    ("GET", "/api/v1/orgs", "/orgs", None, _only({"operator": 200, "auditor": 200})),
    ("GET", "/api/v1/users", "/users", None, _only({"operator": 200, "auditor": 200})),
    ("GET", "/api/v1/nodes", "/nodes", None, USERS_200),
    ("GET", "/api/v1/studies", "/studies", None, USERS_200),
    ("GET", "/api/v1/studies/{study_id}", lambda c, w: f"/studies/{c.done_study}", None,
     _only({"operator": 200, "admin": 200, "consumer": 200, "auditor": 200})),
    ("GET", "/api/v1/studies/{study_id}/progress",
     lambda c, w: f"/studies/{c.done_study}/progress", None,
     _only({"operator": 200, "admin": 200, "consumer": 200, "auditor": 200})),
    ("GET", "/api/v1/models", "/models", None, USERS_200),
    ("GET", "/api/v1/models/{model_id}", lambda c, w: f"/models/{c.model}", None,
     _only({"operator": 200, "admin": 200, "consumer": 200, "auditor": 200})),
    ("GET", "/api/v1/models/{model_id}/weights", lambda c, w: f"/models/{c.model}/weights",
     None, _only({"consumer": 200, "node": 200})),  # release "download", pharma's model
    ("GET", "/api/v1/registries", "/registries", None, ALL_200),
    ("GET", "/api/v1/registries/{name}", "/registries/gi-bleed", None, ALL_200),
    ("GET", "/api/v1/approvals", "/approvals", None,
     _only({"operator": 200, "admin": 200, "other_admin": 200, "auditor": 200})),
    ("GET", "/api/v1/audit/entries", "/audit/entries", None,
     _only({"operator": 200, "auditor": 200})),
    ("GET", "/api/v1/audit/head", "/audit/head", None, _only({"operator": 200, "auditor": 200})),
    ("GET", "/api/v1/audit/proof/{seq}", "/audit/proof/1", None,
     _only({"operator": 200, "auditor": 200})),
    ("GET", "/api/v1/node/tasks/next", "/node/tasks/next", None, _only({"node": 204})),
    ("POST", "/api/v1/node/tasks/{task_id}/result",
     lambda c, w: f"/node/tasks/{c.done_task}/result",
     lambda c, w: c.envelope("task.result", {"status": "completed", "partial": CC_PARTIAL},
                             study_id=c.done_study, round=1),
     _only({"node": 200})),
    ("PUT", "/api/v1/node/catalog", "/node/catalog",
     lambda c, w: c.envelope("catalog", {"tables": {"person": 1000}}), _only({"node": 200})),
    ("PUT", "/api/v1/node/policy", "/node/policy",
     lambda c, w: c.envelope("policy", {"policy": {"level": "L2", "version": 2}}),
     _only({"node": 200})),
    ("PUT", "/api/v1/node/checkpoint", "/node/checkpoint", lambda c, w: c.checkpoint(),
     _only({"node": 200})),
    ("PUT", "/api/v1/node/registries", "/node/registries",
     lambda c, w: c.envelope("registry.status", {"registries": []}), _only({"node": 200})),
    ("GET", "/api/v1/node/secagg/prekeys", "/node/secagg/prekeys", None, _only({"node": 200})),
    ("POST", "/api/v1/node/secagg/prekeys", "/node/secagg/prekeys",
     lambda c, w: c.prekeys(), _only({"node": 200})),
    ("POST", "/api/v1/orgs", "/orgs", lambda c, w: {"name": f"org-{w}", "kind": "consumer"},
     _only({"operator": 201})),
    ("POST", "/api/v1/users", "/users",
     lambda c, w: {"name": f"user-{w}", "org": "hosp-a", "role": "consumer"},
     _only({"operator": 201, "admin": 201})),
    ("POST", "/api/v1/tokens", "/tokens", lambda c, w: {"user": NAMES.get(w, "alice")},
     _only({w: 201 for w in NAMES})),
    ("POST", "/api/v1/nodes", "/nodes", lambda c, w: {"name": f"node-{w}", "org": "hosp-a"},
     _only({"operator": 201, "admin": 201})),
    ("POST", "/api/v1/registries", "/registries", lambda c, w: REGISTRY,
     _only({"operator": 200})),  # unchanged: the same definition as in _setup
    ("POST", "/api/v1/studies/check", "/studies/check", lambda c, w: SPEC,
     _only({"operator": 200, "consumer": 200})),
    ("POST", "/api/v1/studies", "/studies", lambda c, w: SPEC,
     _only({"operator": 201, "consumer": 201})),
    ("POST", "/api/v1/studies/{study_id}/feedback",
     lambda c, w: f"/studies/{c.done_study}/feedback", lambda c, w: {"rating": 4},
     _only({"consumer": 201})),  # the operator may give feedback only on its own studies
    ("POST", "/api/v1/studies/{study_id}/cancel",
     lambda c, w: f"/studies/{c.awaiting()}/cancel", None,
     _only({"operator": 200, "consumer": 200})),
    ("POST", "/api/v1/approvals/{study_id}/{node}/approve",
     lambda c, w: f"/approvals/{c.awaiting()}/node-a/approve", lambda c, w: {},
     _only({"operator": 200, "admin": 200})),
    ("POST", "/api/v1/approvals/{study_id}/{node}/reject",
     lambda c, w: f"/approvals/{c.awaiting()}/node-a/reject", lambda c, w: {"comment": "no"},
     _only({"operator": 200, "admin": 200})),
    ("GET", "/api/v1/meter", "/meter", None, USERS_200),
    ("GET", "/api/v1/billing/statement",
     lambda c, w: "/billing/statement?period=2025-03"
     + {"admin": "&org=hosp-a", "other_admin": "&org=hosp-a"}.get(w, ""),
     None, _only({"operator": 200, "admin": 200, "consumer": 200, "auditor": 200})),
    ("GET", "/api/v1/billing/accounts/{org}", "/billing/accounts/pharma", None,
     _only({"operator": 200, "consumer": 200, "auditor": 200})),
    ("PUT", "/api/v1/billing/accounts/{org}", "/billing/accounts/pharma",
     lambda c, w: {"credit_limit": 1000}, _only({"operator": 200})),
    ("GET", "/api/v1/kpi", "/kpi?period=2025-03", None,
     _only({"operator": 200, "auditor": 200})),
    ("GET", "/api/v1/sla/breaches", "/sla/breaches", None,
     _only({"operator": 200, "auditor": 200})),
    ("POST", "/api/v1/node/key", "/node/key", lambda c, w: c.rotation() if w == "node" else {},
     _only({"node": 200})),
]


# Authenticated routes outside /api/v1: (method, path) -> expected status per principal.
OTHER_MATRIX: list[tuple[str, str, dict[str, int]]] = [
    ("GET", "/metrics", _only({"operator": 200, "auditor": 200})),
]
PUBLIC = {("GET", "/healthz")}  # liveness; the console's pages have their own sign-in


def _setup(space: Space) -> Ctx:
    hub = space.hub
    ctx = Ctx(space)
    study = hub.submit(space.alice, nodes=["node-a"])  # node-a is L1: runs at once
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    ctx.done_study, ctx.done_task = study["id"], task["task_id"]
    ctx.model = _register_model(space, int(study["id"]))
    hub.ok("POST", "/registries", hub.operator, 201, json=REGISTRY)
    hub.publish_policy(space.node_a, {"level": "L2", "version": 2})  # from now on: approvals
    return ctx


def _register_model(space: Space, study_id: int) -> int:
    """A registered model of pharma's, trained on node-a, released for download."""
    from healthspace.core.encoding import encode_array
    from healthspace.hub.db.models import Organisation, RegisteredModel

    hub_state = space.hub.client.app.state.hub  # type: ignore[attr-defined]
    with hub_state.sessions() as session:
        pharma = session.query(Organisation).filter_by(name="pharma").one()
        prep = {"features": ["age"], "kinds": {"age": "numeric"}, "means": {"age": 50.0},
                "stds": {"age": 10.0}, "levels": {}}
        row = RegisteredModel(
            name="risk", version=1, study_id=study_id, owner_org_id=pharma.id,
            kind="logistic", created_at=space.hub.clock.now(), nodes=["node-a"],
            release="download", summary={"rounds": 1, "selected_round": 1},
            package={"architecture": {"kind": "logistic", "inputs": 1, "hidden": []},
                     "preparation": prep, "columns": ["age"], "target": "event",
                     "weights": encode_array([0.5, -1.0])})
        session.add(row)
        session.commit()
        return int(row.id)


def test_the_matrix_covers_every_route() -> None:
    rows = [(method, route) for method, route, *_ in MATRIX]
    assert len(rows) == len(set(rows)), "a route is listed twice"
    assert sorted(rows) == sorted(api_permissions()), "add the new route to MATRIX"
    for method, route, _path, _body, expect in MATRIX:
        assert set(expect) == set(WHO), (method, route)


def test_routes_outside_the_api_are_covered(space: Space) -> None:
    """Every served route outside /api/v1 is public by design or has an OTHER_MATRIX row."""
    rows = sorted((method, path) for method, path, _ in OTHER_MATRIX)
    assert rows == sorted(other_permissions()), "add the new route to OTHER_MATRIX"
    paths = space.hub.client.get("/openapi.json").json()["paths"]
    served = {(method.upper(), path) for path, item in paths.items()
              if not path.startswith("/api/v1/") for method in item}
    assert served == PUBLIC | set(rows)
    doc = (FilePath(__file__).resolve().parents[3] / "docs" / "hub-api.md").read_text("utf-8")
    for (method, path), permission in other_permissions().items():
        row = next((line for line in doc.splitlines() if f"`{method} {path}`" in line), "")
        assert permission is not None and row, f"{method} {path} missing from hub-api.md"
        assert all(who in row for who in permission.describe().split(", ")), (method, path)


def test_every_route_outside_the_api_times_every_principal(space: Space) -> None:
    heads = {"operator": space.hub.operator, "admin": space.admin_a,
             "other_admin": space.admin_b, "consumer": space.alice,
             "auditor": space.auditor, "node": space.node_a}
    for method, path, expect in OTHER_MATRIX:
        assert space.hub.client.request(method, path).status_code == 401, path
        for who in WHO:
            response = space.hub.client.request(method, path, headers=heads[who])
            assert response.status_code == expect[who], (method, path, who, response.text)


def test_auditors_never_write() -> None:
    """Auditors read; the only writes they may make are their own credentials: a fresh
    token or a console password for themselves."""
    for method, route, _path, _body, expect in MATRIX:
        if method != "GET" and route not in ("/api/v1/tokens", "/api/v1/me/password"):
            assert expect["auditor"] == 403, (method, route)


def test_every_route_times_every_principal(space: Space) -> None:
    heads = {"operator": space.hub.operator, "admin": space.admin_a,
             "other_admin": space.admin_b, "consumer": space.alice,
             "auditor": space.auditor, "node": space.node_a}
    ctx = _setup(space)
    for method, route, path, body, expect in MATRIX:
        for who in WHO:
            concrete = path(ctx, who) if callable(path) else path
            kwargs = {"json": body(ctx, who)} if body is not None else {}
            response = space.hub.call(method, concrete, heads[who], **kwargs)
            assert response.status_code == expect[who], (method, route, who, response.text)
