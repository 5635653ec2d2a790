"""The node's ε budget ledger: check and charge differentially private tasks per consumer.

A charge is keyed by (study, round, task), so a retried task is never charged twice; a task
that fails after being charged is refunded. Every charge and refund is also an entry in the
node's audit ledger. The consumer is the study's organisation (its user when it has none):
an organisation cannot multiply its budget by registering more users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from healthspace.core.clock import iso
from healthspace.core.errors import Refused
from healthspace.core.models import TaskAssignment
from healthspace.governance.policy import DpBudget, UsagePolicy, as_utc
from healthspace.node import audit
from healthspace.node.state import NodeState

_SLACK = 1e-9  # ε values are sums of floats: tolerate rounding, never a real overspend


@dataclass(frozen=True)
class Charge:
    consumer: str
    period: str
    epsilon: float
    spent: float  # in this period, including this charge
    budget: float

    @property
    def remaining(self) -> float:
        return max(self.budget - self.spent, 0.0)


def consumer_key(assignment: TaskAssignment) -> str:
    return assignment.consumer_org or assignment.consumer


def period_key(budget: DpBudget, now: datetime) -> str:
    """``all`` for a lifetime budget, else the UTC calendar month (``2025-03``) or year."""
    now = as_utc(now)
    if budget.period == "month":
        return f"{now.year:04d}-{now.month:02d}"
    if budget.period == "year":
        return f"{now.year:04d}"
    return "all"


def spent(state: NodeState, consumer: str, period: str) -> float:
    with state.connect() as db:
        row = db.execute("SELECT coalesce(sum(epsilon), 0) FROM dp_charges "
                         "WHERE consumer = ? AND period = ?", (consumer, period)).fetchone()
    return float(row[0])


def charge(
    state: NodeState, policy: UsagePolicy, assignment: TaskAssignment, epsilon: float
) -> Charge:
    """Atomically check the remaining budget and charge ``epsilon``; idempotent per task.

    Raises :class:`Refused`, naming what remains, when the policy sets no budget or the
    charge would exceed it.
    """
    budget = policy.budget
    consumer = consumer_key(assignment)
    if budget is None:
        raise Refused("differentially private tasks need an ε budget in the node's policy "
                      "(dp_budget); this dataset sets none")
    period = period_key(budget, state.clock.now())
    key = (assignment.study_id, assignment.round, assignment.task_id)
    with state.connect() as db:  # BEGIN IMMEDIATE: no other charge interleaves
        used = float(db.execute("SELECT coalesce(sum(epsilon), 0) FROM dp_charges "
                                "WHERE consumer = ? AND period = ?",
                                (consumer, period)).fetchone()[0])
        if db.execute("SELECT 1 FROM dp_charges WHERE study_id = ? AND round = ? "
                      "AND task_id = ?", key).fetchone():
            return Charge(consumer, period, 0.0, used, budget.epsilon_per_consumer)
        left = max(budget.epsilon_per_consumer - used, 0.0)
        if epsilon > left + _SLACK:
            raise Refused(f"study would spend ε={epsilon:g} but only ε={left:g} of "
                          f"ε={budget.epsilon_per_consumer:g} remains for consumer "
                          f"{consumer} in period {period}")
        db.execute("INSERT INTO dp_charges VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (*key, consumer, period, float(epsilon), iso(state.clock.now())))
    done = Charge(consumer, period, float(epsilon), used + epsilon,
                  budget.epsilon_per_consumer)
    audit.record(state, "dp.charge", audit.task_subject(*key),
                 {"consumer": consumer, "period": period, "epsilon": float(epsilon),
                  "remaining": done.remaining, "budget": done.budget})
    return done


def refund(state: NodeState, assignment: TaskAssignment) -> None:
    """Undo a task's charge (the task failed, so nothing was released)."""
    key = (assignment.study_id, assignment.round, assignment.task_id)
    with state.connect() as db:
        row = db.execute("SELECT epsilon, consumer, period FROM dp_charges WHERE study_id = ? "
                         "AND round = ? AND task_id = ?", key).fetchone()
        db.execute("DELETE FROM dp_charges WHERE study_id = ? AND round = ? AND task_id = ?",
                   key)
    if row is not None:
        audit.record(state, "dp.refund", audit.task_subject(*key),
                     {"epsilon": row[0], "consumer": row[1], "period": row[2]})
