"""Compare hub and node ledgers: every execution one side recorded must appear on the other.

Conventions (the hub and node write these; see docs/audit.md):
  hub  — action ``task.result`` when it accepts a node's result, actor ``node:{name}``;
  node — action ``task.run`` when it runs a task and sends the outcome, actor ``node:{name}``;
  both — subject ``study:{study_id}/round:{round}/task:{task_id}`` (see ``task_subject``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from healthspace.ledger.entry import Entry

HUB_ACTION = "task.result"
NODE_ACTION = "task.run"
NODE_ACTOR_PREFIX = "node:"
_SUBJECT = re.compile(r"^study:(?P<study>[^/]+)/round:(?P<round>\d+)/task:(?P<task>[^/]+)$")


class Execution(NamedTuple):
    study_id: str
    round: int
    node: str
    task_id: str
    seq: int


@dataclass(frozen=True)
class Discrepancy:
    """An execution (study, round, node) recorded on only one side, or with differing tasks."""

    kind: str  # "missing_on_hub" | "missing_on_node" | "task_mismatch"
    study_id: str
    round: int
    node: str
    task_id: str
    seq: int  # the entry on the side that has it
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_subject(study_id: int | str, round: int, task_id: int | str) -> str:
    return f"study:{study_id}/round:{round}/task:{task_id}"


def node_actor(name: str) -> str:
    return f"{NODE_ACTOR_PREFIX}{name}"


def node_name(actor: str) -> str:
    """``node:hospital_1`` → ``hospital_1`` (a bare name is accepted as is)."""
    return actor.removeprefix(NODE_ACTOR_PREFIX)


def executions(entries: Iterable[Entry], action: str, node: str | None = None) -> list[Execution]:
    """Executions recorded by entries with ``action`` (and, if given, by node ``node``)."""
    found = []
    for e in entries:
        if e.action != action or (match := _SUBJECT.match(e.subject)) is None:
            continue
        name = node_name(e.actor)
        if node is None or name == node:
            found.append(Execution(match["study"], int(match["round"]), name, match["task"], e.seq))
    return found


def _index(found: list[Execution]) -> dict[tuple[str, int, str], Execution]:
    return {(x.study_id, x.round, x.node): x for x in found}


def crosscheck(
    hub_entries: Iterable[Entry], node_entries: Iterable[Entry], node: str | None = None
) -> list[Discrepancy]:
    """Discrepancies between the hub's ``task.result`` and the node's ``task.run`` entries.

    With ``node`` given only that node's executions are compared (the hub records all nodes)."""
    node_side = _index(executions(node_entries, NODE_ACTION, node))
    names = {node} if node is not None else {key[2] for key in node_side}
    hub_side = _index([x for x in executions(hub_entries, HUB_ACTION) if x.node in names])
    out = []
    for key in sorted(hub_side.keys() | node_side.keys()):
        h, n = hub_side.get(key), node_side.get(key)
        if h is not None and n is None:
            out.append(_make("missing_on_node", h, "hub accepted a result the node never ran"))
        elif n is not None and h is None:
            out.append(_make("missing_on_hub", n, "node ran a task the hub has no result for"))
        elif h is not None and n is not None and h.task_id != n.task_id:
            out.append(_make("task_mismatch", h, f"hub task {h.task_id}, node task {n.task_id}"))
    return out


def _make(kind: str, x: Execution, detail: str) -> Discrepancy:
    return Discrepancy(kind, x.study_id, x.round, x.node, x.task_id, x.seq, detail)
