"""Faults against real processes: a hub (`healthspace hub serve`) and node agents (`healthspace
node serve`) on loopback, killed with SIGKILL, a hub database locked by another writer, node
clocks off, malformed and oversized payloads.

Timing is made deterministic with locks, never with sleeps in product code: a node whose state
file is write-locked (BEGIN IMMEDIATE from the test) can claim a task but can neither persist nor
deliver its result, so it is killed "mid-task" at a known point; a write-locked hub database holds
a node's result post in flight. This module starts its own federation (the shared ``live`` one
must never be killed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from healthspace.auditing import crosscheck_files, verify_hub, verify_node
from healthspace.cdm.ingest import ingest_table
from healthspace.cdm.store import state_path
from healthspace.client.sdk import HubClient
from healthspace.core.enums import StudyStatus
from healthspace.core.envelope import seal
from healthspace.core.errors import Conflict
from healthspace.launch import LocalFederation
from healthspace.node.agent import NodeAgent
from healthspace.node.state import NodeState

from .conftest import OPEN_POLICY, ROSSI_NODES, add_rossi_registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("faults")]

BUSY_S = 4  # the hub's SQLite busy bound in this module (``?timeout=`` in its URL)
SUMMARY = {"analysis": "summary", "params": {"variables": ["age", "prio"]}}
GLM = {"analysis": "glm", "params": {"formula": "arrest ~ fin + age + prio",
                                     "family": "binomial"}}


@dataclass
class FaultFederation(LocalFederation):
    """A LocalFederation whose hub has a short busy bound and a 1 MB body limit."""

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.hub_file}?timeout={BUSY_S}"

    @property
    def hub_file(self) -> Path:
        return self.workdir / "hub.sqlite"

    def start_hub(self, timeout: float = 60.0) -> None:
        self.hub_process = self._spawn(
            ["hub", "serve", "--db", self.db_url, "--host", self.host, "--port", str(self.port),
             "--log-level", "warning", "--max-body-mb", "1", "--sla-sweep", "0"], "hub.log")
        self._wait_healthy(timeout)


@dataclass
class Fed:
    fed: FaultFederation
    consumer_token: str
    parts: dict[str, Path]

    def consumer(self) -> HubClient:
        return HubClient(self.fed.url, self.consumer_token)

    def state_file(self, node: str) -> Path:
        return state_path(self.fed.nodes[node].store)


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> Iterator[Fed]:
    workdir = tmp_path_factory.mktemp("faults")
    fed = FaultFederation(workdir, poll_wait=60.0)
    fed.init_hub()
    fed.start_hub()
    try:
        parts = add_rossi_registry(fed, workdir)
        fed.wait_nodes_ready()
        fed.ensure_org("pharma", "consumer")
        with fed.operator() as op:
            op.add_user("analyst", "pharma", "consumer")
            token = op.issue_token("analyst").token
        yield Fed(fed=fed, consumer_token=token, parts=parts)
    finally:
        # Throw-away processes holding 60 s long-polls: no graceful stop to wait for.
        for process in [n.process for n in fed.nodes.values()] + [fed.hub_process]:
            if process is not None and process.poll() is None:
                kill9(process)
        fed.close()


# --- helpers ----------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A read on a hub or node SQLite file (WAL readers never wait for writers)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


class WriteLock:
    """BEGIN IMMEDIATE on a SQLite file from another connection: its writers must wait."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self.con.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.con.execute("ROLLBACK")
            self.con.close()
            self.held = False


@contextmanager
def write_locked(*paths: Path) -> Iterator[list[WriteLock]]:
    locks = [WriteLock(p) for p in paths]
    try:
        yield locks
    finally:
        for lock in locks:
            lock.release()


def kill9(process: subprocess.Popen[bytes] | None) -> None:
    assert process is not None and process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


def tasks_of(f: Fed, study_id: int) -> list[dict[str, Any]]:
    rows = query(f.fed.hub_file,
                 "SELECT t.id, n.name, t.round, t.status, t.error, t.envelope_id FROM tasks t "
                 "JOIN nodes n ON n.id = t.node_id WHERE t.study_id = ? ORDER BY t.round, n.name",
                 study_id)
    keys = ("id", "node", "round", "status", "error", "envelope_id")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def task(f: Fed, study_id: int, node: str, round_: int = 1) -> dict[str, Any] | None:
    found = [t for t in tasks_of(f, study_id) if t["node"] == node and t["round"] == round_]
    return found[0] if found else None


def status_is(f: Fed, study_id: int, node: str, status: str, round_: int = 1) -> bool:
    row = task(f, study_id, node, round_)
    return row is not None and row["status"] == status


def flush_hub_ledger(f: Fed) -> None:
    """Have the running hub append every entry its writer holds (a ledger read through the
    API flushes first), so the file read next holds everything committed so far."""
    httpx.get(f"{f.fed.url}/api/v1/audit/entries?limit=1", timeout=30,
              headers={"Authorization": f"Bearer {f.fed.operator_token}"}).raise_for_status()


def hub_results(f: Fed, study_id: int) -> dict[int, int]:
    """task id -> task.result entries in the hub's audit ledger (one per accepted result)."""
    flush_hub_ledger(f)
    rows = query(f.fed.hub_file, "SELECT subject FROM ledger_entries WHERE action = 'task.result'"
                 " AND subject LIKE ?", f"study:{study_id}/%")
    counts: dict[int, int] = {}
    for (subject,) in rows:
        task_id = int(subject.rsplit(":", 1)[1])
        counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def outbox(f: Fed, node: str, task_id: int) -> tuple[Any, ...] | None:
    rows = query(f.state_file(node), "SELECT task_id, acked_at FROM outbox WHERE task_id = ?",
                 task_id)
    return rows[0] if rows else None


def node_ran(f: Fed, node: str, task_id: int) -> bool:
    rows = query(f.state_file(node), "SELECT count(*) FROM ledger_entries WHERE action = "
                 "'task.run' AND subject LIKE ?", f"%/task:{task_id}")
    return rows[0][0] == 1


def checkpoints_published(f: Fed, node: str) -> int:
    rows = query(f.fed.hub_file, "SELECT count(*) FROM envelopes e JOIN nodes n ON "
                 "n.id = e.node_id WHERE n.name = ? AND e.kind = 'ledger.checkpoint'", node)
    return int(rows[0][0])


def wait_idle(f: Fed, *nodes: str) -> None:
    """Each node's last action before a long-poll is publishing its ledger head: once the hub
    holds a checkpoint as large as the node's ledger, the node waits on the hub and touches
    its state file only when a task arrives."""
    def idle(node: str) -> bool:
        size = query(f.state_file(node), "SELECT count(*) FROM ledger_entries")[0][0]
        heads = query(f.fed.hub_file, "SELECT e.body FROM envelopes e JOIN nodes n ON "
                      "n.id = e.node_id WHERE n.name = ? AND e.kind = 'ledger.checkpoint' "
                      "ORDER BY e.id DESC LIMIT 1", node)
        return bool(heads) and json.loads(heads[0][0])["payload"]["size"] == size

    for node in nodes:
        wait_for(f"{node} to wait for work", lambda node=node: idle(node))
    time.sleep(0.3)  # the poll request itself is on its way


def cli(*args: str) -> dict[str, Any]:
    """``healthspace ARGS --json`` in a subprocess; its JSON document (exit 0 required)."""
    proc = subprocess.run([sys.executable, "-m", "healthspace", *args, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def assert_ledgers_consistent(f: Fed, nodes: list[str], *, through_cli: bool = False) -> None:
    """The hub ledger verifies; each node's ledger verifies against the checkpoints it
    published and records the same executions as the hub (``healthspace audit``)."""
    flush_hub_ledger(f)
    hub_db = str(f.fed.hub_file)
    if through_cli:
        assert cli("audit", "verify", "--hub-db", hub_db)["ok"] is True
    else:
        report = verify_hub(hub_db)
        assert report.ok, report.problem
    for node in nodes:
        report, published = verify_node(f.state_file(node), hub_db, node)
        assert report.ok and published > 0, report.problem
        if through_cli:
            assert cli("audit", "crosscheck", "--hub-db", hub_db, "--node-state",
                       str(f.state_file(node)), "--node-name", node)["consistent"] is True
        else:
            assert crosscheck_files(hub_db, f.state_file(node), node)[1] == []


def pooled_moments(f: Fed, nodes: list[str]) -> dict[str, tuple[int, float, float]]:
    """n, mean and sample SD of age and prio over the given sites' rows, by DuckDB SQL."""
    files = ", ".join(f"'{f.parts[n].as_posix()}'" for n in nodes)
    con = duckdb.connect()
    out = {}
    for column in ("age", "prio"):
        n, mean, sd = con.execute(f"SELECT count({column}), avg({column}), "
                                  f"stddev_samp({column}) FROM read_csv_auto([{files}])"
                                  ).fetchone()
        out[column] = (int(n), float(mean), float(sd))
    con.close()
    return out


def assert_summary_of(f: Fed, result: dict[str, Any], nodes: list[str]) -> None:
    expected = pooled_moments(f, nodes)
    stats = result["strata"]["all"]["numeric"]
    for column, (n, mean, sd) in expected.items():
        assert stats[column]["n"] == n
        assert stats[column]["mean"] == pytest.approx(mean, rel=1e-12)
        assert stats[column]["sd"] == pytest.approx(sd, rel=1e-12)


def log_text(f: Fed, name: str) -> str:
    """A process log with whitespace collapsed (the console handler wraps long lines)."""
    return " ".join((f.fed.workdir / "logs" / name).read_text(errors="replace").split())


# --- 1. a node killed mid-study -----------------------------------------------------------


def test_a_node_killed_mid_task_is_dropped_and_does_not_submit_after_restart(faults: Fed):
    f, victim = faults, "rossi_c"
    others = [n for n in ROSSI_NODES if n != victim]
    wait_idle(f, *ROSSI_NODES)
    with write_locked(f.state_file(victim)), f.consumer() as c:
        study = c.submit({**SUMMARY, "nodes": ROSSI_NODES, "round_timeout_seconds": 5}).id
        wait_for("the victim to claim its task", lambda: status_is(f, study, victim, "running"))
        for node in others:
            wait_for(f"{node}'s answer", lambda node=node: status_is(f, study, node, "completed"))
        kill9(f.fed.nodes[victim].process)  # it holds the task; nothing is persisted yet
    with f.consumer() as c:
        view = c.wait(study, timeout=60)
    assert view.status == StudyStatus.PARTIAL, view.error
    dropped = task(f, study, victim)
    assert dropped is not None and dropped["status"] == "failed"
    assert dropped["error"].startswith("timed out") and dropped["envelope_id"] is None
    assert f"{victim}: failed: timed out" in (view.error or "")
    assert {(t["node"], t["round"]) for t in tasks_of(f, study)} == {
        (victim, 1), *((n, r) for n in others for r in (1, 2))}
    assert_summary_of(f, view.result, others)  # the survivors' pooled data, nothing else

    seen = checkpoints_published(f, victim)
    f.fed.start_node(victim)
    wait_for("the restarted node to poll", lambda: checkpoints_published(f, victim) > seen)
    wait_idle(f, victim)
    assert outbox(f, victim, dropped["id"]) is None and not node_ran(f, victim, dropped["id"])
    assert task(f, study, victim) == dropped  # not redelivered, no second answer
    assert hub_results(f, study) == {t["id"]: 1 for t in tasks_of(f, study)
                                     if t["node"] != victim}
    assert_ledgers_consistent(f, ROSSI_NODES)


def test_a_node_killed_with_an_undelivered_result_delivers_it_exactly_once(faults: Fed):
    f, victim = faults, "rossi_b"
    others = [n for n in ROSSI_NODES if n != victim]
    wait_idle(f, *ROSSI_NODES)
    with write_locked(f.state_file(victim)) as (node_lock,), f.consumer() as c:
        study = c.submit({**SUMMARY, "nodes": ROSSI_NODES}).id
        wait_for("the victim to claim its task", lambda: status_is(f, study, victim, "running"))
        for node in others:
            wait_for(f"{node}'s answer", lambda node=node: status_is(f, study, node, "completed"))
        claimed = task(f, study, victim)
        assert claimed is not None
        with write_locked(f.fed.hub_file):  # the victim's post will wait on the hub's lock
            node_lock.release()
            wait_for("the victim to persist its result",
                     lambda: outbox(f, victim, claimed["id"]) and node_ran(f, victim,
                                                                        claimed["id"]))
            time.sleep(0.5)  # its post is now in flight, held by the lock
            kill9(f.fed.nodes[victim].process)
    # The hub finishes the post the dead node sent: the result is in, unacknowledged.
    wait_for("the in-flight result to land", lambda: status_is(f, study, victim, "completed"))
    assert outbox(f, victim, claimed["id"])[1] is None
    f.fed.start_node(victim)
    with f.consumer() as c:
        view = c.wait(study, timeout=60)  # round 2 needs the restarted node
    assert view.status == StudyStatus.COMPLETED, view.error
    wait_for("the resent result's ack", lambda: outbox(f, victim, claimed["id"])[1] is not None)
    assert f"result for task {claimed['id']} delivered (duplicate=True)" in log_text(
        f, f"node-{victim}.log")
    rows = tasks_of(f, study)
    assert sorted((t["node"], t["round"]) for t in rows) == sorted(
        (n, r) for n in ROSSI_NODES for r in (1, 2))
    assert all(t["status"] == "completed" and t["envelope_id"] for t in rows)
    assert hub_results(f, study) == {t["id"]: 1 for t in rows}  # one result per task
    assert_summary_of(f, view.result, ROSSI_NODES)
    assert_ledgers_consistent(f, ROSSI_NODES)


# --- 2. the hub killed mid-study --------------------------------------------------------------


def test_a_hub_killed_while_nodes_hold_tasks_resumes_with_no_lost_or_doubled_partial(
    faults: Fed,
):
    f = faults
    with f.consumer() as c:
        reference = c.wait(c.submit({**GLM, "nodes": ROSSI_NODES}).id, timeout=90)
    assert reference.status == StudyStatus.COMPLETED, reference.error
    wait_idle(f, *ROSSI_NODES)
    with write_locked(*(f.state_file(n) for n in ROSSI_NODES)), f.consumer() as c:
        study = c.submit({**GLM, "nodes": ROSSI_NODES}).id
        for node in ROSSI_NODES:
            wait_for(f"{node} to claim", lambda node=node: status_is(f, study, node, "running"))
        claimed = {n: task(f, study, n) for n in ROSSI_NODES}
        for node, row in claimed.items():  # the assignment reached the node (it logs it)
            assert row is not None
            wait_for(f"{node} to hold its task", lambda n=node, r=row: (
                f"task {r['id']}: study {study} round 1" in log_text(f, f"node-{n}.log")))
        kill9(f.fed.hub_process)
    for node, row in claimed.items():  # computed and kept while the hub is down
        wait_for(f"{node} to keep its result", lambda n=node, r=row: outbox(f, n, r["id"]))
    f.fed.start_hub()
    with f.consumer() as c:
        view = c.wait(study, timeout=90)
    assert view.status == StudyStatus.COMPLETED, view.error
    for key in ("params", "bse"):
        assert view.result[key] == pytest.approx(reference.result[key], rel=1e-12, abs=1e-14)
    assert view.round == reference.round
    rows = tasks_of(f, study)
    pairs = [(t["node"], t["round"]) for t in rows]
    assert len(pairs) == len(set(pairs)) == 3 * view.round  # one task per node and round
    assert all(t["status"] == "completed" and t["envelope_id"] for t in rows)
    assert hub_results(f, study) == {t["id"]: 1 for t in rows}  # no lost or doubled partial
    progress = query(f.fed.hub_file, "SELECT round, count(*) FROM study_progress "
                     "WHERE study_id = ? GROUP BY round", study)
    assert all(count == 1 for _, count in progress)
    assert_ledgers_consistent(f, ROSSI_NODES, through_cli=True)


# --- 3. a locked hub database -----------------------------------------------------------------


def _submit_raw(f: Fed, spec: dict[str, Any]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(f"{f.fed.url}/api/v1/studies", json=spec, timeout=60,
                          headers={"Authorization": f"Bearer {f.consumer_token}"})
    return response, time.monotonic() - started


def _count(f: Fed, table: str) -> int:
    return int(query(f.fed.hub_file, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608


def test_a_locked_hub_database_delays_requests_and_past_the_bound_answers_503(faults: Fed):
    f = faults
    log_start = len(log_text(f, "hub.log"))
    spec = {**SUMMARY, "nodes": ROSSI_NODES}
    with write_locked(f.fed.hub_file) as (lock,):
        threading.Timer(1.5, lock.release).start()  # shorter than the busy bound
        response, took = _submit_raw(f, spec)
    assert response.status_code == 201, response.text
    assert took >= 1.2  # it waited for the lock, then went through
    with f.consumer() as c:
        view = c.wait(response.json()["id"], timeout=60)
    assert view.status == StudyStatus.COMPLETED, view.error

    # The ledger writer appends what the last study committed first: a writer held up past
    # the bound loses its batch ("audit ledger append failed"), which is not this test's case.
    flush_hub_ledger(f)
    with write_locked(f.fed.hub_file):  # longer than the bound
        counts = {t: _count(f, t) for t in ("studies", "tasks", "study_events",
                                            "ledger_entries")}
        response, took = _submit_raw(f, spec)
    assert response.status_code == 503, response.text
    assert BUSY_S - 0.5 <= took < BUSY_S + 5
    assert response.headers["Retry-After"] == str(BUSY_S)
    detail = response.json()["detail"]
    assert "busy" in detail["message"] and f"{BUSY_S} s" in detail["message"]
    assert detail["field"] == "database"
    assert {t: _count(f, t) for t in counts} == counts
    response, _ = _submit_raw(f, spec)  # the retry the 503 asked for
    assert response.status_code == 201, response.text
    with f.consumer() as c:
        assert c.wait(response.json()["id"], timeout=60).status == StudyStatus.COMPLETED
    assert "Traceback" not in log_text(f, "hub.log")[log_start:]


# --- 4. node clock skew -----------------------------------------------------------------------


class SkewedClock:
    """The system clock, off by ``offset``."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(scope="module")
def skewed(faults: Fed) -> Iterator[tuple[str, Path, SkewedClock]]:
    """A fourth node, run in-process by the test, whose clock the test sets."""
    store = faults.fed.workdir / "nodes" / "skewed.duckdb"
    ingest_table(store, faults.parts["rossi_a"])
    node = faults.fed.add_node("skewed", "registry", store, start=False, policy=OPEN_POLICY)
    yield node.token, store, SkewedClock()


def _agent(f: Fed, skewed: tuple[str, Path, SkewedClock]) -> NodeAgent:
    token, store, clock = skewed
    agent = NodeAgent(hub=f.fed.url, token=token, store=store,
                      state=NodeState.open(state_path(store), clock=clock), poll_wait=1.0)
    agent.pin_hub_key()
    return agent


def _run_until_done(f: Fed, agent: NodeAgent, study: int) -> Any:
    with f.consumer() as c:
        for _ in range(10):
            agent.step()
            view = c.study(study)
            if view.status != StudyStatus.RUNNING:
                return view
    raise AssertionError(f"study {study} did not finish")


def test_clock_skew_inside_the_window_is_accepted(faults: Fed, skewed):
    _, _, clock = skewed
    clock.offset = -timedelta(minutes=4)
    agent = _agent(faults, skewed)
    try:
        agent.step()  # catalogue, policy, prekeys and ledger head, all sealed 4 min slow
        with faults.consumer() as c:
            study = c.submit({**SUMMARY, "nodes": ["skewed"]}).id
        view = _run_until_done(faults, agent, study)
    finally:
        agent.client.close()
    assert view.status == StudyStatus.COMPLETED, view.error
    assert_summary_of(faults, view.result, ["rossi_a"])


def test_clock_skew_beyond_the_window_is_refused_clearly_and_recovers(faults: Fed, skewed,
                                                                      caplog):
    f, (_, store, clock) = faults, skewed
    clock.offset = timedelta(0)
    agent = _agent(f, skewed)
    agent.step()  # catalogue, policy, prekeys published with a good clock
    with f.consumer() as c:
        study = c.submit({**SUMMARY, "nodes": ["skewed"]}).id
    clock.offset = timedelta(minutes=6, seconds=30)
    envelopes = _count(f, "envelopes")
    with pytest.raises(Conflict) as refused:
        agent.step()  # claims, runs, and its result is refused
    assert refused.value.field == "timestamp"
    message = refused.value.message
    assert re.search(r"is 6 min \d+ s ahead of the receiver's clock", message), message
    assert "at most 5 min of clock skew" in message and "NTP" in message
    assert _count(f, "envelopes") == envelopes  # nothing stored for a refused envelope
    assert status_is(f, study, "skewed", "running")

    with caplog.at_level("WARNING", logger="healthspace.node"):  # what the operator sees
        loop = threading.Thread(target=agent.run_forever, daemon=True)
        loop.start()
        wait_for("the node's log line", lambda: any(
            "timestamp" in r.getMessage() and "clock" in r.getMessage() for r in caplog.records))
        agent.stop()
        loop.join(timeout=30)
    assert not loop.is_alive()

    behind = seal("catalog", {}, NodeState.open(state_path(store)).signing_key(),
                  node_id=agent.node_id, clock=_Offset(-timedelta(minutes=7)))
    with HubClient(f.fed.url, skewed[0]) as node_client, pytest.raises(Conflict) as late:
        node_client.publish_catalog(behind)
    assert late.value.field == "timestamp" and "behind" in late.value.message

    clock.offset = timedelta(0)  # clock fixed: the kept result goes through
    agent = _agent(f, skewed)
    try:
        view = _run_until_done(f, agent, study)
    finally:
        agent.client.close()
    assert view.status == StudyStatus.COMPLETED, view.error
    assert_summary_of(f, view.result, ["rossi_a"])


class _Offset:
    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


# --- 5. oversized and malformed payloads ------------------------------------------------------

STATE_TABLES = ("studies", "tasks", "envelopes", "envelope_nonces", "ledger_entries",
                "study_events")


def _state(f: Fed) -> dict[str, int]:
    return {t: _count(f, t) for t in STATE_TABLES}


def _node_headers(f: Fed, node: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {f.fed.nodes[node].token}",
            "Content-Type": "application/json"}


def _a_result_envelope(f: Fed, node: str, task_id: int, study_id: int, round_: int,
                       payload: dict[str, Any]) -> dict[str, Any]:
    node_id = query(f.fed.hub_file, "SELECT id FROM nodes WHERE name = ?", node)[0][0]
    key = NodeState.open(f.state_file(node)).signing_key()
    return seal("task.result", payload, key, node_id=node_id, study_id=study_id,
                round=round_).model_dump(mode="json")


def test_malformed_and_oversized_payloads_get_4xx_and_change_nothing(faults: Fed):
    f = faults
    with f.consumer() as c:
        done = c.wait(c.submit({**SUMMARY, "nodes": ["rossi_a"]}).id, timeout=60)
    assert done.status == StudyStatus.COMPLETED
    target = task(f, done.id, "rossi_a")
    assert target is not None
    good = _a_result_envelope(f, "rossi_a", target["id"], done.id, 1,
                              {"status": "completed", "partial": {}})
    result_url = f"{f.fed.url}/api/v1/node/tasks/{target['id']}/result"
    studies_url = f"{f.fed.url}/api/v1/studies"
    node = _node_headers(f, "rossi_a")
    consumer = {"Authorization": f"Bearer {f.consumer_token}",
                "Content-Type": "application/json"}
    huge = json.dumps({**SUMMARY, "params": {"variables": ["age"] * 200_000}})
    cases: list[tuple[str, str, dict[str, str], str | bytes, int, str]] = [
        ("bad JSON", studies_url, consumer, '{"analysis": "summary",', 422, "body"),
        ("not an object", studies_url, consumer, "[1, 2, 3]", 422, "body"),
        ("wrong type", studies_url, consumer, json.dumps({**SUMMARY, "nodes": "rossi_a"}),
         422, "body.nodes"),
        ("wrong type", studies_url, consumer, json.dumps({"analysis": 5}), 422,
         "body.analysis"),
        ("huge array", studies_url, consumer, huge, 413, "body"),
        ("huge array", studies_url, consumer, json.dumps(
            {"analysis": "cohort_count", "nodes": ["rossi_a"],
             "cohort": {"entry": {"condition": {"codes": ["ICD10:K92%"] * 50_000}}}}),
         422, "cohort.entry.condition.codes"),
        ("repeated nodes", studies_url, consumer,
         json.dumps({**SUMMARY, "nodes": ["rossi_a"] * 50_000}), 422, "body"),
        ("oversized", studies_url, consumer, b" " * (2 << 20), 413, "body"),
        ("bad JSON", result_url, node, json.dumps(good)[:-40], 422, "body"),
        ("truncated envelope", result_url, node,
         json.dumps({k: v for k, v in good.items() if k != "signature"}), 422,
         "body.signature"),
        ("not hex", result_url, node, json.dumps({**good, "signature": "zz" * 64}), 422,
         "body.signature"),
        ("wrong type", result_url, node, json.dumps({**good, "nonce": 12345}), 422,
         "body.nonce"),
        ("wrong type", result_url, node, json.dumps({**good, "payload": [1]}), 422,
         "body.payload"),
        ("oversized", result_url, node, json.dumps(
            {**good, "payload": {"partial": {"x": [0.5] * 400_000}}}), 413, "body"),
    ]
    before = _state(f)
    for what, url, headers, body, status, field in cases:
        response = httpx.post(url, content=body, headers=headers, timeout=60)
        assert response.status_code == status, (what, field, response.text[:300])
        detail = response.json()["detail"]
        assert detail["message"], (what, detail)
        assert re.fullmatch(rf"{re.escape(field)}([.\[].*)?", detail["field"]), (what, detail)
    # Signed by the node, but the payload is not a task result.
    for payload, field in (({"status": "finished"}, "payload.status"),
                           ({"status": "completed", "metrics": {"records": "many"}},
                            "payload.metrics.records")):
        envelope = _a_result_envelope(f, "rossi_a", target["id"], done.id, 1, payload)
        response = httpx.post(result_url, json=envelope, headers=node, timeout=60)
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["field"] == field
    assert _state(f) == before  # no nonce, envelope, study or ledger entry was written
    with f.consumer() as c:
        after = c.wait(c.submit({**SUMMARY, "nodes": ["rossi_a"]}).id, timeout=60)
    assert after.status == StudyStatus.COMPLETED
    assert _count(f, "studies") == before["studies"] + 1
