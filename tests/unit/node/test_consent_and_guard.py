"""Consent at the node changes counts by exactly the affected persons; the node re-checks tasks."""

from datetime import UTC, datetime

import pytest
from nacl.signing import SigningKey

from healthspace.analyses.execute import run_local
from healthspace.cdm.ingest import ingest_dir
from healthspace.core.clock import FixedClock
from healthspace.core.envelope import sign_assignment
from healthspace.core.models import TaskAssignment
from healthspace.governance.consent import ConsentRecord
from healthspace.governance.consent_filter import ConsentFilter
from healthspace.governance.policy import ConsentTier, UsagePolicy
from healthspace.node import consent
from healthspace.node.runner import run_task
from healthspace.node.state import NodeState
from healthspace.sim import load_site

COHORT = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def site(synth_dir):
    return load_site(synth_dir / "hospital_2")


@pytest.fixture(scope="module")
def cohort_people(site):
    from healthspace.cohort.compiler import compile_cohort
    from healthspace.cohort.models import load_cohort

    q = compile_cohort(load_cohort(COHORT))
    rows = site.con.execute(
        f"SELECT p.person_id, p.person_source_value FROM ({q.sql}) c "
        "JOIN person p USING (person_id) ORDER BY p.person_id", q.params).fetchall()
    assert len(rows) > 100
    return rows


def count(site, flt=None, purpose="research"):
    run = run_local(site.con, site="s", analysis="cohort_count", params={"breakdown": False},
                    cohort=COHORT, purpose=purpose, consent=flt)
    return run.partial["count"]


def records(people, tier, purposes=None, by="psv"):
    return [ConsentRecord(person_source_value=psv if by == "psv" else None,
                          person_id=pid if by == "pid" else None, tier=tier, purposes=purposes)
            for pid, psv in people]


def test_withheld_removes_exactly_those_persons(site, cohort_people):
    base = count(site)
    assert base == len(cohort_people)
    flt = ConsentFilter.build(records(cohort_people[:17], "withheld"), ConsentTier.OPEN,
                              "research")
    assert count(site, flt) == base - 17
    by_id = ConsentFilter.build(records(cohort_people[:5], "withheld", by="pid"),
                                ConsentTier.OPEN, "research")
    assert count(site, by_id) == base - 5


def test_research_only_depends_on_purpose(site, cohort_people):
    base = count(site)
    recs = records(cohort_people[:23], "research_only")
    assert count(site, ConsentFilter.build(recs, ConsentTier.OPEN, "research")) == base
    assert count(site, ConsentFilter.build(recs, ConsentTier.OPEN, "public_health")) == base
    flt = ConsentFilter.build(recs, ConsentTier.OPEN, "drug_development")
    assert count(site, flt, purpose="drug_development") == base - 23


def test_purpose_list_narrows_the_tier(site, cohort_people):
    base = count(site)
    recs = records(cohort_people[:11], "open", purposes=["public_health"])
    assert count(site, ConsentFilter.build(recs, ConsentTier.OPEN, "research")) == base - 11
    assert count(site, ConsentFilter.build(recs, ConsentTier.OPEN, "public_health")) == base


def test_opt_in_regime_counts_only_consenting_persons(site, cohort_people):
    flt = ConsentFilter.build(records(cohort_people[:40], "open"), ConsentTier.WITHHELD,
                              "research")
    assert count(site, flt) == 40


def test_withdrawal_applies_to_the_next_computation_but_not_a_running_study(tmp_path,
                                                                           cohort_people):
    state = NodeState.init(tmp_path / "n.state.sqlite")
    consent.upsert(state, records(cohort_people[:3], "withheld"))
    snapshot = consent.build_filter(state, "research", study_id=7)
    consent.upsert(state, records(cohort_people[3:10], "withheld"))
    assert len(consent.build_filter(state, "research", study_id=7).flip_source_values) == 3
    assert len(consent.build_filter(state, "research").flip_source_values) == 10
    assert snapshot.to_json() == consent.build_filter(state, "research", 7).to_json()
    assert consent.tier_counts(state)["withheld"] == 10
    assert consent.published_tiers(state, 10) == {"open": "<10", "research_only": "<10",
                                                  "withheld": 10}


def test_consent_import_is_all_or_nothing(tmp_path):
    state = NodeState.init(tmp_path / "n.state.sqlite")
    good = tmp_path / "consent.csv"
    good.write_text("person_source_value,tier,purposes\nabc,withheld,\ndef,open,research\n")
    assert consent.import_csv(state, good) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("person_source_value,tier\nx,open\ny,sometimes\n")
    with pytest.raises(Exception, match="row 2"):
        consent.import_csv(state, bad)
    assert sum(consent.tier_counts(state).values()) == 2


# --- the node's re-check ----------------------------------------------------------------


@pytest.fixture
def node(tmp_path, synth_dir):
    store = tmp_path / "h3.duckdb"
    ingest_dir(store, synth_dir / "hospital_3")
    state = NodeState.init(tmp_path / "h3.state.sqlite", clock=FixedClock(NOW))
    hub_key = SigningKey.generate()
    state.pin_hub_key(hub_key.verify_key.encode().hex())
    return store, state, hub_key


def assignment(hub_key, **overrides):
    fields = dict(task_id=1, study_id=1, round=1, analysis="cohort_count", params={},
                  cohort=COHORT, purpose="research", consumer="ana", consumer_org="pharma",
                  submitted_at=NOW.isoformat(), min_cell_size=10)
    fields.update(overrides)
    body = TaskAssignment.model_validate(fields).model_dump(mode="json")
    body["hub_signature"] = sign_assignment(body, hub_key)
    return TaskAssignment.model_validate(body)


def test_node_refuses_what_its_own_policy_denies(node):
    store, state, hub_key = node
    state.set_policy(UsagePolicy(approval_mode="auto", allowed_purposes=["research"]))
    ok = run_task(store, assignment(hub_key), site="h3", state=state, clock=FixedClock(NOW))
    assert ok.status == "completed"
    # The hub's copy might have allowed this purpose; the node's policy is authoritative.
    refused = run_task(store, assignment(hub_key, purpose="commercial_insurance"), site="h3",
                       state=state, clock=FixedClock(NOW))
    assert refused.status == "refused" and "commercial_insurance" in refused.error


def test_node_refuses_without_the_required_approval(node):
    store, state, hub_key = node
    state.set_policy(UsagePolicy(level="L3"))
    result = run_task(store, assignment(hub_key), site="h3", state=state, clock=FixedClock(NOW))
    assert result.status == "refused" and "approv" in result.error
    approvals = [
        {"step": "steward", "approved": True, "by": "admin", "at": NOW.isoformat()},
        {"step": "ethics", "approved": True, "by": "irb", "at": NOW.isoformat(),
         "ethics_ref": "IRB-2026-001"},
    ]
    result = run_task(store, assignment(hub_key, approvals=approvals), site="h3", state=state,
                      clock=FixedClock(NOW))
    assert result.status == "completed"


def test_node_refuses_assignments_not_signed_by_the_pinned_hub(node):
    store, state, _ = node
    state.set_policy(UsagePolicy(approval_mode="auto"))
    forged = assignment(SigningKey.generate())
    result = run_task(store, forged, site="h3", state=state, clock=FixedClock(NOW))
    assert result.status == "refused" and "hub" in result.error
    tampered = assignment(node[2]).model_copy(update={"purpose": "public_health"})
    result = run_task(store, tampered, site="h3", state=state, clock=FixedClock(NOW))
    assert result.status == "refused"


def test_policy_min_cell_size_is_applied_on_the_node(node):
    store, state, hub_key = node
    state.set_policy(UsagePolicy(approval_mode="auto", min_cell_size=100000))
    result = run_task(store, assignment(hub_key), site="h3", state=state, clock=FixedClock(NOW))
    assert result.partial["count"] == "<100000"
