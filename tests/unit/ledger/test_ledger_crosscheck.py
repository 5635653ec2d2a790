"""Hub vs node cross-check over the task subject convention."""

from __future__ import annotations

from healthspace.ledger.crosscheck import (
    HUB_ACTION,
    NODE_ACTION,
    crosscheck,
    node_actor,
    node_name,
    task_subject,
)
from healthspace.ledger.entry import Entry


def _entries(rows: list[tuple[str, str, str]]) -> list[Entry]:
    return [Entry(i, "t", actor, action, subject, "d", "p", "h")
            for i, (actor, action, subject) in enumerate(rows, start=1)]


def test_subject_and_actor_helpers() -> None:
    assert task_subject(7, 2, 31) == "study:7/round:2/task:31"
    assert node_actor("hospital_1") == "node:hospital_1"
    assert node_name("node:hospital_1") == node_name("hospital_1") == "hospital_1"


def test_consistent_ledgers_have_no_discrepancies() -> None:
    hub = _entries([
        ("node:h1", HUB_ACTION, task_subject(1, 1, 10)),
        ("node:h2", HUB_ACTION, task_subject(1, 1, 11)),  # another node: not compared
        ("user:ana", "study.submit", "study:1"),
    ])
    node = _entries([("node:h1", NODE_ACTION, task_subject(1, 1, 10)),
                     ("node:h1", "consent.update", "person:1")])
    assert crosscheck(hub, node, "h1") == []
    assert crosscheck(hub, node) == []  # the node name is taken from the node's entries


def test_each_side_missing_and_mismatched_tasks() -> None:
    hub = _entries([
        ("node:h1", HUB_ACTION, task_subject(1, 1, 10)),
        ("node:h1", HUB_ACTION, task_subject(2, 1, 20)),  # node never ran it
        ("node:h1", HUB_ACTION, task_subject(3, 1, 30)),
    ])
    node = _entries([
        ("node:h1", NODE_ACTION, task_subject(1, 1, 10)),
        ("node:h1", NODE_ACTION, task_subject(1, 2, 12)),  # hub has no result for round 2
        ("node:h1", NODE_ACTION, task_subject(3, 1, 31)),  # same execution, other task id
    ])
    found = crosscheck(hub, node, "h1")
    kinds = {(d.kind, d.study_id, d.round) for d in found}
    assert kinds == {("missing_on_node", "2", 1), ("missing_on_hub", "1", 2),
                     ("task_mismatch", "3", 1)}
    missing = next(d for d in found if d.kind == "missing_on_hub")
    assert (missing.node, missing.task_id, missing.seq) == ("h1", "12", 2)
