"""The governance CLI commands, thin over HubClient, driven against an in-process hub."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hubkit import CC_PARTIAL, COHORT, Headers, Space
from typer.testing import CliRunner

from healthspace.cli import approvals, study
from healthspace.cli import hub as hub_cli
from healthspace.client.sdk import HubClient

runner = CliRunner()


def _client_for(space: Space, headers: Headers) -> Any:
    def make(_hub: str | None, _token: str | None) -> HubClient:
        c = HubClient("http://testserver", None)
        c.http._client.close()
        # A TestClient is an httpx.Client, so the real SDK talks to the in-process app.
        c.http._client = TestClient(space.hub.client.app, headers=headers)
        return c

    return make


def _run(app: Any, args: list[str]) -> Any:
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_study_check_and_approvals_commands(
    space: Space, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L3"})
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps({"analysis": "cohort_count", "cohort": COHORT,
                                "nodes": ["node-a"]}))
    monkeypatch.setattr(study, "client", _client_for(space, space.alice))
    checked = json.loads(_run(study.app, ["check", str(spec), "--json"]).stdout)
    assert checked["nodes"]["node-a"]["outcome"] == "needs_approval"
    assert "needs_approval" in _run(study.app, ["check", str(spec)]).stdout
    sid = hub.submit(space.alice, nodes=["node-a"])["id"]

    monkeypatch.setattr(approvals, "client", _client_for(space, space.admin_a))
    listed = json.loads(_run(approvals.app, ["list", "--json"]).stdout)
    assert [r["study_id"] for r in listed] == [sid]
    _run(approvals.app, ["approve", str(sid), "node-a", "--comment", "ok"])
    done = json.loads(_run(approvals.app, ["approve", str(sid), "node-a", "--step", "ethics",
                                           "--ethics-ref", "IRB-9", "--json"]).stdout)
    assert done["status"] == "approved"
    bad = runner.invoke(approvals.app, ["list", "--status", "lost"])
    assert bad.exit_code != 0

    other = hub.submit(space.alice, nodes=["node-a"])["id"]
    text = _run(approvals.app, ["reject", str(other), "node-a", "--comment", "no"]).stdout
    assert "rejected" in text


def test_study_feedback_and_hub_rotate_key(
    space: Space, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = space.hub
    sid = hub.submit(space.alice, nodes=["node-a"])["id"]
    task = hub.next_task(space.node_a)
    assert task is not None
    hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    monkeypatch.setattr(study, "client", _client_for(space, space.alice))
    given = json.loads(_run(study.app, ["feedback", str(sid), "--rating", "4", "--json"]).stdout)
    assert given["rating"] == 4 and given["by"] == "alice"
    assert runner.invoke(study.app, ["feedback", str(sid), "--rating", "9"]).exit_code == 2

    before = hub.ok("GET", "/hub/key", space.alice)["public_key"]
    statement = json.loads(_run(hub_cli.app, ["rotate-key", "--db", hub.url, "--json"]).stdout)
    assert statement["old_key"] == before
    assert hub.ok("GET", "/hub/key", space.alice)["public_key"] == statement["new_key"]
