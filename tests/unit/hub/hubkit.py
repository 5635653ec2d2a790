"""Test kit: a fresh hub over a SQLite file (or any database URL), driven in-process through
FastAPI's TestClient."""

from __future__ import annotations

import atexit
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from nacl.signing import SigningKey
from sqlalchemy import create_engine, text

from healthspace.core.clock import FixedClock
from healthspace.core.envelope import seal
from healthspace.hub.app import create_app
from healthspace.hub.bootstrap import init_hub
from healthspace.hub.settings import HubSettings

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
COHORT = {"entry": {"condition": {"codes": ["ICD10:K92%"]}}}
CC_PARTIAL = {"count": 42, "min_cell_size": 10, "breakdown": None}  # cohort_count's format
OPEN_POLICY = {"level": "L1"}  # automatic approval: studies start at once

Headers = dict[str, str]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Hub:
    """A running in-process hub plus helpers to populate it through its own API."""

    url: str
    clock: FixedClock
    client: TestClient
    operator: Headers
    nodes: dict[str, int] = field(default_factory=dict)
    keys: dict[str, SigningKey] = field(default_factory=dict)  # node name -> signing key
    names: dict[str, str] = field(default_factory=dict)  # node Authorization header -> name
    handed_out: dict[int, tuple[int, int]] = field(default_factory=dict)  # task -> study, round

    def close(self) -> None:
        self.client.close()
        self.client.app.state.hub.engine.dispose()  # type: ignore[attr-defined]

    def call(self, method: str, path: str, headers: Headers | None = None, **kw: Any) -> Any:
        return self.client.request(method, "/api/v1" + path, headers=headers, **kw)

    def ok(self, method: str, path: str, headers: Headers, expect: int = 200, **kw: Any) -> Any:
        response = self.call(method, path, headers, **kw)
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    def org(self, name: str, kind: str) -> None:
        self.ok("POST", "/orgs", self.operator, 201, json={"name": name, "kind": kind})

    def user(self, name: str, org: str, role: str) -> Headers:
        self.ok("POST", "/users", self.operator, 201, json={"name": name, "org": org, "role": role})
        return bearer(self.ok("POST", "/tokens", self.operator, 201, json={"user": name})["token"])

    def node(
        self, name: str, org: str, persons: int = 1000, policy: dict[str, Any] | None = None
    ) -> Headers:
        """Enrol a node with a fresh key, publish its signed catalogue and policy."""
        key = SigningKey.generate()
        body = {"name": name, "org": org, "public_key": key.verify_key.encode().hex()}
        enrolled = self.ok("POST", "/nodes", self.operator, 201, json=body)
        self.nodes[name], self.keys[name] = enrolled["id"], key
        headers = bearer(enrolled["token"])
        self.names[headers["Authorization"]] = name
        self.ok("PUT", "/node/catalog", headers, json=self.seal(headers, "catalog",
                                                              {"tables": {"person": persons}}))
        self.publish_policy(headers, OPEN_POLICY if policy is None else policy)
        return headers

    def seal(
        self, headers: Headers, kind: str, payload: dict[str, Any], **ids: Any
    ) -> dict[str, Any]:
        """A fresh envelope from the node behind ``headers``, signed with its key, as JSON."""
        name = self.names[headers["Authorization"]]
        envelope = seal(kind, payload, self.keys[name], node_id=self.nodes[name],
                        clock=self.clock, **ids)
        return envelope.model_dump(mode="json")

    def publish_policy(self, headers: Headers, policy: dict[str, Any]) -> dict[str, Any]:
        envelope = self.seal(headers, "policy", {"policy": policy})
        published: dict[str, Any] = self.ok("PUT", "/node/policy", headers, json=envelope)
        return published

    def submit(self, headers: Headers, **spec: Any) -> dict[str, Any]:
        spec.setdefault("analysis", "cohort_count")
        if spec["analysis"] == "cohort_count":
            spec.setdefault("cohort", COHORT)
        return self.ok("POST", "/studies", headers, 201, json=spec)

    def next_task(self, headers: Headers, wait: float = 0) -> dict[str, Any] | None:
        response = self.call("GET", f"/node/tasks/next?wait={wait}", headers)
        assert response.status_code in (200, 204), response.text
        if response.status_code == 204:
            return None
        task: dict[str, Any] = response.json()
        self.handed_out[task["task_id"]] = (task["study_id"], task["round"])
        return task

    def result_envelope(self, headers: Headers, task_id: int, **result: Any) -> dict[str, Any]:
        """A signed ``task.result`` envelope for a task this kit saw handed out."""
        study_id, round_ = self.handed_out.get(task_id, (None, None))
        return self.seal(headers, "task.result", result, study_id=study_id, round=round_)

    def post_raw(self, headers: Headers, task_id: int, **result: Any) -> Any:
        envelope = self.result_envelope(headers, task_id, **result)
        return self.call("POST", f"/node/tasks/{task_id}/result", headers, json=envelope)

    def post(self, headers: Headers, task_id: int, **result: Any) -> dict[str, Any]:
        envelope = self.result_envelope(headers, task_id, **result)
        ack: dict[str, Any] = self.ok(
            "POST", f"/node/tasks/{task_id}/result", headers, json=envelope
        )
        return ack

    def study(self, headers: Headers, study_id: int, wait: float = 0) -> dict[str, Any]:
        return self.ok("GET", f"/studies/{study_id}?wait={wait}", headers)


# The hub tests' database: SQLite files by default; with HEALTHSPACE_HUB_TEST_DB=postgresql
# every hub is a database in one throw-away PostgreSQL cluster per test process
# (tests/pgcluster.py), so the same suite is the hub's contract on both backends.
BACKEND = os.environ.get("HEALTHSPACE_HUB_TEST_DB", "sqlite")
_CLUSTER: Any = None


def cluster() -> Any:
    """This process's PostgreSQL cluster, started on first use."""
    global _CLUSTER
    if _CLUSTER is None:
        from tests.pgcluster import Cluster

        _CLUSTER = Cluster()
        atexit.register(_CLUSTER.stop)
    return _CLUSTER


def _new_url(folder: Path) -> str:
    return cluster().database() if BACKEND == "postgresql" else f"sqlite:///{folder / 'hub.db'}"


def open_hub(url: str, operator: Headers, settings: HubSettings | None = None,
             **kw: Any) -> Hub:
    """An app over the hub database already at ``url``."""
    clock = FixedClock(START)
    app = create_app(url, clock=clock, settings=settings)
    return Hub(url=url, clock=clock, client=TestClient(app), operator=operator, **kw)


def hub_at(url: str, settings: HubSettings | None = None) -> Hub:
    """A fresh hub over the empty database at ``url`` (any backend the hub supports)."""
    token = init_hub(url, clock=FixedClock(START))
    return open_hub(url, bearer(token), settings)


def make_hub(folder: Path, settings: HubSettings | None = None) -> Hub:
    return hub_at(_new_url(folder), settings)


def copy_hub(template: Hub, folder: Path, settings: HubSettings | None = None) -> Hub:
    """A private copy of a populated hub (much faster than building one per test): a file
    copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL."""
    template.close()
    if template.url.startswith("sqlite:///"):
        for path in Path(template.url.removeprefix("sqlite:///")).parent.iterdir():
            if path.name.startswith("hub.db"):
                shutil.copyfile(path, folder / path.name)
        url = f"sqlite:///{folder / 'hub.db'}"
    else:
        url = cluster().copy(template.url)
    return open_hub(
        url, template.operator, settings, nodes=dict(template.nodes), keys=dict(template.keys),
        names=dict(template.names), handed_out=dict(template.handed_out),
    )


def execute_sql(hub: Hub, statement: str, params: dict[str, Any] | None = None) -> None:
    """Change the hub's database underneath it (tampering tests), on either backend."""
    hub.client.app.state.hub.audit.flush()  # type: ignore[attr-defined]
    engine = create_engine(hub.url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement), params or {})
    finally:
        engine.dispose()


@dataclass
class Space:
    """Two hospitals with a node each, a payer node, two consumers, an auditor, admins."""

    hub: Hub
    node_a: Headers
    node_b: Headers
    node_payer: Headers
    alice: Headers
    bob: Headers
    auditor: Headers
    admin_a: Headers
    admin_b: Headers


def make_space(hub: Hub) -> Space:
    for name, kind in [
        ("hosp-a", "hospital"),
        ("hosp-b", "hospital"),
        ("payer", "payer"),
        ("pharma", "consumer"),
        ("regulator", "operator"),
    ]:
        hub.org(name, kind)
    return Space(
        hub=hub,
        node_a=hub.node("node-a", "hosp-a"),
        node_b=hub.node("node-b", "hosp-b"),
        node_payer=hub.node("node-payer", "payer"),
        alice=hub.user("alice", "pharma", "consumer"),
        bob=hub.user("bob", "pharma", "consumer"),
        auditor=hub.user("audrey", "regulator", "auditor"),
        admin_a=hub.user("admin-a", "hosp-a", "data_holder_admin"),
        admin_b=hub.user("admin-b", "hosp-b", "data_holder_admin"),
    )


def copy_space(template: Space, folder: Path, settings: HubSettings | None = None) -> Space:
    return replace(template, hub=copy_hub(template.hub, folder, settings))
