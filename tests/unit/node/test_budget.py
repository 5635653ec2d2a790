"""The node's ε budget ledger: charge, refuse with what remains, renew per period, refund."""

import sqlite3
from datetime import UTC, datetime

import pytest
from nacl.signing import SigningKey

from healthspace.cdm.ingest import ingest_dir
from healthspace.core.clock import FixedClock
from healthspace.core.envelope import sign_assignment
from healthspace.core.errors import InvalidInput, Refused
from healthspace.core.models import TaskAssignment
from healthspace.governance.policy import UsagePolicy, load_policy
from healthspace.node import budget
from healthspace.node.runner import run_task
from healthspace.node.state import NodeState

COHORT = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
NOW = datetime(2026, 3, 30, 12, tzinfo=UTC)
MONTHLY = UsagePolicy(approval_mode="auto", dp_budget={"epsilon_per_consumer": 2.0,
                                                       "period": "month"})


def task(task_id=1, study_id=1, round=1, epsilon=1.0, **overrides):
    fields = dict(task_id=task_id, study_id=study_id, round=round, analysis="cohort_count",
                  params={"dp_epsilon": epsilon}, cohort=COHORT, purpose="research",
                  consumer="ana", consumer_org="pharma", submitted_at=NOW.isoformat())
    fields.update(overrides)
    return TaskAssignment.model_validate(fields)


@pytest.fixture
def state(tmp_path):
    return NodeState.init(tmp_path / "n.state.sqlite", clock=FixedClock(NOW), name="h3")


def ledger_actions(state):
    with sqlite3.connect(state.path) as db:
        return [r[0] for r in db.execute("SELECT action FROM ledger_entries ORDER BY seq")]


def test_charge_refuse_and_monthly_renewal(state):
    first = budget.charge(state, MONTHLY, task(1, 1), 1.5)
    assert (first.consumer, first.period, first.remaining) == ("pharma", "2026-03", 0.5)
    with pytest.raises(Refused) as info:
        budget.charge(state, MONTHLY, task(2, 2), 1.0)
    assert str(info.value.message) == ("study would spend ε=1 but only ε=0.5 of ε=2 remains "
                                       "for consumer pharma in period 2026-03")
    # Another organisation has its own budget; a user without one is charged as themself.
    assert budget.charge(state, MONTHLY, task(3, 3, consumer_org="other"), 2.0).remaining == 0
    assert budget.charge(state, MONTHLY, task(4, 4, consumer_org=""), 1.0).consumer == "ana"
    state.clock.advance(days=3)  # April: the monthly budget renews
    assert budget.charge(state, MONTHLY, task(5, 5), 2.0).period == "2026-04"
    assert budget.spent(state, "pharma", "2026-03") == 1.5
    assert ledger_actions(state) == ["dp.charge"] * 4


def test_charge_is_idempotent_per_task_and_refund_restores(state):
    budget.charge(state, MONTHLY, task(7, 3, round=2), 1.0)
    again = budget.charge(state, MONTHLY, task(7, 3, round=2), 1.0)  # a retried task
    assert again.epsilon == 0 and budget.spent(state, "pharma", "2026-03") == 1.0
    budget.refund(state, task(7, 3, round=2))
    assert budget.spent(state, "pharma", "2026-03") == 0
    assert ledger_actions(state) == ["dp.charge", "dp.refund"]


def test_without_a_budget_dp_tasks_are_refused(state):
    with pytest.raises(Refused, match="dp_budget"):
        budget.charge(state, UsagePolicy(), task(), 0.1)


def test_lifetime_and_yearly_periods():
    never = load_policy({"dp_budget": {"epsilon": 1}}).budget
    assert never is not None and budget.period_key(never, NOW) == "all"
    yearly = load_policy({"dp_budget": {"epsilon_per_consumer": 1, "period": "year"}}).budget
    assert yearly is not None and budget.period_key(yearly, NOW) == "2026"
    with pytest.raises(InvalidInput) as info:
        load_policy({"dp_budget": {"epsilon_per_consumer": 0}})
    assert info.value.field == "policy.dp_budget.epsilon_per_consumer"
    with pytest.raises(InvalidInput):
        load_policy({"dp_budget": {"epsilon_per_consumer": 1, "period": "week"}})


# --- in the runner --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory, synth_dir):
    path = tmp_path_factory.mktemp("store") / "h3.duckdb"
    ingest_dir(path, synth_dir / "hospital_3")
    return path


def signed(hub_key, assignment):
    body = assignment.model_dump(mode="json")
    body["hub_signature"] = sign_assignment(body, hub_key)
    return TaskAssignment.model_validate(body)


def test_runner_charges_refuses_and_refunds_failures(store, state):
    hub_key = SigningKey.generate()
    state.pin_hub_key(hub_key.verify_key.encode().hex())
    state.set_policy(MONTHLY)
    clock = FixedClock(NOW)
    ok = run_task(store, signed(hub_key, task(1, 1, epsilon=1.5)), site="h3", state=state,
                  clock=clock)
    assert ok.status == "completed" and ok.partial["dp"] is True
    assert ok.partial["epsilon"] == 1.5
    bad = signed(hub_key, task(2, 2, epsilon=0.5, cohort={"entry": {"condition": {
        "codes": ["E11"]}}}))
    failed = run_task(store, bad, site="h3", state=state, clock=clock)
    assert failed.status == "refused"  # invalid cohort: charged, then refunded
    assert budget.spent(state, "pharma", "2026-03") == 1.5
    over = run_task(store, signed(hub_key, task(3, 3, epsilon=1.0)), site="h3", state=state,
                    clock=clock)
    assert over.status == "refused"
    assert "only ε=0.5 of ε=2 remains for consumer pharma in period 2026-03" in over.error
    invalid = run_task(store, signed(hub_key, task(4, 4, epsilon=-1.0)), site="h3",
                       state=state, clock=clock)
    assert invalid.status == "refused" and "params.dp_epsilon" in invalid.error
    assert ledger_actions(state) == ["dp.charge", "dp.charge", "dp.refund"]
