"""Iterative studies: every round reads its rows again, but its persons are the same persons."""

from __future__ import annotations

from datetime import timedelta

from hubkit import START, Space
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.hub.db.models import (
    MeterRecord,
    Node,
    SettlementLine,
    Study,
    StudyNode,
    Task,
    User,
)
from healthspace.hub.db.session import make_engine
from healthspace.hub.services import billing, kpi
from healthspace.hub.settings import HubSettings


def test_rounds_add_rows_but_not_persons(space: Space) -> None:
    engine = make_engine(space.hub.url)
    prices = {"per_person": 1.0}
    with Session(engine) as s:
        alice = s.scalar(select(User).where(User.name == "alice"))
        nodes = list(s.scalars(select(Node).where(Node.name.in_(["node-a", "node-b"]))
                               .order_by(Node.name)))
        study = Study(analysis="glm", params={}, purpose="drug_development",
                      nodes=[n.name for n in nodes], status="completed", round=3, state={},
                      submitted_by=alice.id, created_at=START, updated_at=START,
                      finished_at=START + timedelta(minutes=1))
        s.add(study)
        s.flush()
        for node, persons in zip(nodes, (120, 80), strict=True):
            s.add(StudyNode(study_id=study.id, node_id=node.id, decision="allow",
                            approval="not_required", prices=prices))
            for rnd in (1, 2, 3):
                task = Task(study_id=study.id, node_id=node.id, round=rnd, status="completed",
                            min_cell_size=10, queued_at=START, attempts=1)
                s.add(task)
                s.flush()
                s.add(MeterRecord(study_id=study.id, task_id=task.id, node_id=node.id,
                                  round=rnd, analysis="glm", purpose=study.purpose,
                                  preview=False, status="completed", records_scanned=1000,
                                  persons=persons, seconds=0.5, bytes=100, epsilon=0.0,
                                  envelope_id=0, recorded_at=START))
        s.commit()
        billing.settle(s, START, HubSettings(), study)
        s.commit()
        report = kpi.report(s, "2025-03", {"ok": True}, "CNY")
        lines = {ln.node.name: ln for ln in s.scalars(select(SettlementLine))}
    engine.dispose()
    cost = report["cost"]
    assert cost["records_used"] == 6 * 1000  # three rounds at two nodes
    assert cost["persons_contributing"] == 120 + 80  # not three times over
    assert cost["total_cost"] == 200.0 and cost["cost_per_person"] == 1.0
    assert {n: ln.charge_cents for n, ln in lines.items()} == {"node-a": 12000, "node-b": 8000}
    assert {n: ln.usage["seconds"] for n, ln in lines.items()} == {"node-a": 1.5, "node-b": 1.5}
