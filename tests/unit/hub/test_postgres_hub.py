"""The hub on PostgreSQL: the same API contract as on SQLite, over a throw-away cluster on
127.0.0.1 (tests/pgcluster.py). A study from submission through approvals, node tasks and
results to its released result; metering, settlement and the statement; the ledger and
its verification; concurrent task claims; the console's pages."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hubkit import CC_PARTIAL, Space, hub_at, make_space
from test_billing import PRICES_A, run
from test_console import sign_in

from healthspace.core.enums import StudyStatus


@pytest.fixture
def pg_space(pg_cluster) -> Iterator[Space]:
    space = make_space(hub_at(pg_cluster.database()))
    assert space.hub.client.app.state.hub.engine.dialect.name == "postgresql"
    yield space
    space.hub.close()


def test_a_study_runs_end_to_end_with_approvals_results_and_settlement(
        pg_space: Space) -> None:
    hub = pg_space.hub
    hub.publish_policy(pg_space.node_a, {"level": "L2", "version": 2, "prices": PRICES_A,
                                         "allowed_purposes": ["research"]})
    study = hub.submit(pg_space.alice, nodes=["node-a", "node-b"], purpose="research")
    assert study["status"] == StudyStatus.AWAITING_APPROVAL
    assert hub.next_task(pg_space.node_a) is None  # held until the steward decides
    hub.ok("POST", f"/approvals/{study['id']}/node-a/approve", pg_space.admin_a,
           json={"comment": "ok"})
    run(hub, pg_space.node_a, {"status": "completed", "partial": CC_PARTIAL},
        records_scanned=5000, persons=42, seconds=1.5)
    run(hub, pg_space.node_b, {"status": "completed", "partial": CC_PARTIAL},
        records_scanned=3000, persons=42)
    done = hub.study(pg_space.alice, study["id"])
    assert done["status"] == StudyStatus.COMPLETED
    assert done["result"]["sites"] == {"node-a": 42, "node-b": 42}
    assert done["result"]["total"] == 84
    statement = hub.ok("GET", "/billing/statement?period=2025-03", pg_space.alice)
    assert statement["totals"]["balanced"] is True
    assert statement["totals"]["invoiced_cents"] > 0
    assert {line["node"] for line in statement["lines"]} >= {"node-a"}
    kpi = hub.ok("GET", "/kpi?period=2025-03", pg_space.auditor)
    assert kpi["efficiency"]["studies"] == 1 and kpi["safety"]["ledger"]["ok"] is True
    entries = hub.ok("GET", "/audit/entries?limit=1000", pg_space.auditor)
    assert kpi["safety"]["ledger"]["entries"] == len(entries)
    assert {"study.submitted", "study.approval", "task.result", "meter.record",
            "billing.settle", "study.finished"} <= {e["action"] for e in entries}


def test_a_task_is_claimed_by_one_poll_only(pg_space: Space) -> None:
    """Many polls at once for the same node: the compare-and-set claim hands the task out
    once (PostgreSQL's row versions, not SQLite's single writer, decide here)."""
    hub = pg_space.hub
    hub.submit(pg_space.alice, nodes=["node-a"])
    got: list[object] = []
    lock = threading.Lock()

    def poll() -> None:
        response = hub.call("GET", "/node/tasks/next?wait=0", pg_space.node_a)
        with lock:
            got.append(response.json()["task_id"] if response.status_code == 200 else None)

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [task for task in got if task is not None]
    # a redelivery of the node's own running task is the same task: never a second one
    assert len(set(claimed)) == 1


def test_the_console_reads_the_same_database(pg_space: Space) -> None:
    hub = pg_space.hub
    study = hub.submit(pg_space.alice, nodes=["node-b"])
    run(hub, pg_space.node_b, {"status": "completed", "partial": CC_PARTIAL})
    client = sign_in(pg_space, pg_space.alice)
    page = client.get(f"/console/studies/{study['id']}")
    assert page.status_code == 200 and 'data-testid="study-status">completed<' in page.text
    auditor = sign_in(pg_space, pg_space.auditor)
    dashboard = auditor.get("/console/dashboard")
    assert dashboard.status_code == 200 and 'data-testid="ledger-status">verified<' in \
        dashboard.text
    assert auditor.get("/console/catalog").status_code == 200
