"""Previews on the node: the policy's release mode is forced, DP previews spend the budget."""

import sqlite3
from datetime import UTC, datetime

import pytest
from nacl.signing import SigningKey

from healthspace.cdm.ingest import ingest_dir
from healthspace.core.clock import FixedClock
from healthspace.core.envelope import sign_assignment
from healthspace.core.models import TaskAssignment
from healthspace.governance.policy import UsagePolicy
from healthspace.node import budget
from healthspace.node.runner import run_task
from healthspace.node.state import NodeState

COHORT = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
NOW = datetime(2026, 3, 30, 12, tzinfo=UTC)
EXACT = {"obfuscate": False, "dp_epsilon": None, "breakdown": True}


@pytest.fixture(scope="module")
def store(tmp_path_factory, synth_dir):
    path = tmp_path_factory.mktemp("store") / "h3.duckdb"
    ingest_dir(path, synth_dir / "hospital_3")
    return path


@pytest.fixture
def node(tmp_path):
    state = NodeState.init(tmp_path / "n.state.sqlite", clock=FixedClock(NOW), name="h3")
    key = SigningKey.generate()
    state.pin_hub_key(key.verify_key.encode().hex())
    return state, key


def assignment(key, task_id=1, preview=True, params=EXACT):
    body = TaskAssignment(task_id=task_id, study_id=task_id, round=1, analysis="cohort_count",
                          params=params, cohort=COHORT, purpose="research", consumer="ana",
                          consumer_org="pharma", submitted_at=NOW,
                          preview=preview).model_dump(mode="json")
    body["hub_signature"] = sign_assignment(body, key)
    return TaskAssignment.model_validate(body)


def test_an_l3_preview_runs_obfuscated_without_approvals(store, node):
    state, key = node
    state.set_policy(UsagePolicy(level="L3", previews={"mode": "obfuscated"}))
    result = run_task(store, assignment(key), site="h3", state=state, clock=FixedClock(NOW))
    assert result.status == "completed", result.error
    partial = result.partial or {}
    assert partial["obfuscated"] is True and partial["breakdown"] is None
    assert isinstance(partial["count"], int) and partial["count"] % 5 == 0
    regular = run_task(store, assignment(key, 2, preview=False), site="h3", state=state,
                       clock=FixedClock(NOW))
    assert regular.status == "refused" and "approval" in (regular.error or "")
    with sqlite3.connect(state.path) as db:  # the differencing guard remembered nothing
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert "releases" not in tables or not db.execute("SELECT 1 FROM releases").fetchone()


def test_previews_off_on_the_node_refuse(store, node):
    state, key = node
    state.set_policy(UsagePolicy(level="L3"))
    result = run_task(store, assignment(key), site="h3", state=state, clock=FixedClock(NOW))
    assert result.status == "refused" and "previews.mode: off" in (result.error or "")


def test_a_dp_preview_is_charged_to_the_budget(store, node):
    state, key = node
    state.set_policy(UsagePolicy(level="L2", dp_budget={"epsilon_per_consumer": 0.25},
                                 previews={"mode": "dp", "epsilon": 0.1}))
    for task_id in (1, 2):
        result = run_task(store, assignment(key, task_id, params={"obfuscate": True}),
                          site="h3", state=state, clock=FixedClock(NOW))
        assert result.status == "completed", result.error
        assert (result.partial or {})["dp"] is True and (result.partial or {})["epsilon"] == 0.1
    assert budget.spent(state, "pharma", "all") == pytest.approx(0.2)
    over = run_task(store, assignment(key, 3), site="h3", state=state, clock=FixedClock(NOW))
    assert over.status == "refused" and "remains for consumer pharma" in (over.error or "")


def test_previews_do_not_count_against_the_daily_study_limit(store, node):
    state, key = node
    state.set_policy(UsagePolicy(level="L1", rate_limit_per_day=1,
                                 previews={"mode": "obfuscated"}))

    def run(task_id: int, preview: bool):
        result = run_task(store, assignment(key, task_id, preview=preview), site="h3",
                          state=state, clock=FixedClock(NOW))
        state.log_run(task_id=task_id, study_id=task_id, round=1, analysis="cohort_count",
                      consumer="ana", purpose="research", status=result.status.value,
                      preview=int(preview))  # as the agent logs every run
        return result

    assert run(1, preview=True).status == "completed"
    assert run(2, preview=True).status == "completed"
    assert run(3, preview=False).status == "completed"  # the two previews did not count
    refused = run(4, preview=False)
    assert refused.status == "refused" and "limit" in (refused.error or "")


def test_an_old_run_log_gains_the_preview_flag(tmp_path):
    path = tmp_path / "old.state.sqlite"
    with sqlite3.connect(path) as db:  # a run log as state files had it before previews
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER "
                   "NOT NULL, study_id INTEGER NOT NULL, round INTEGER NOT NULL, analysis TEXT "
                   "NOT NULL, consumer TEXT, purpose TEXT, status TEXT NOT NULL, records "
                   "INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0, error TEXT, "
                   "finished_at TEXT NOT NULL)")
        db.execute("INSERT INTO runs (task_id, study_id, round, analysis, status, finished_at) "
                   "VALUES (1, 1, 1, 'glm', 'completed', '2026-01-01T00:00:00Z')")
    state = NodeState.init(path, clock=FixedClock(NOW), name="old")
    state.log_run(task_id=2, study_id=2, round=1, analysis="cohort_count", status="completed",
                  preview=1)
    assert [(r["task_id"], r["preview"]) for r in state.runs()] == [(1, 0), (2, 1)]
