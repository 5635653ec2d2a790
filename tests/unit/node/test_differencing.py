"""The differencing defence: count(A) − count(A without target) cannot be read off a node."""

import sqlite3
from datetime import UTC, datetime

import duckdb
import numpy as np
import pytest
from nacl.signing import SigningKey

from healthspace.cdm.ingest import ingest_dir
from healthspace.cohort.compiler import compile_cohort
from healthspace.cohort.models import load_cohort
from healthspace.core.clock import FixedClock
from healthspace.core.envelope import sign_assignment
from healthspace.core.errors import Refused
from healthspace.core.models import TaskAssignment
from healthspace.governance.policy import UsagePolicy
from healthspace.node.differencing import (
    NearDuplicateRelease,
    ReleaseMemory,
    fingerprint,
    pack,
    unpack,
)
from healthspace.node.runner import run_task
from healthspace.node.state import NodeState
from healthspace.sim import load_site, simulate

K = 10
BASE = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
NOW = datetime(2026, 3, 30, 12, tzinfo=UTC)
POLICY = UsagePolicy(approval_mode="auto", dp_budget={"epsilon_per_consumer": 10.0})


def with_criteria(inclusion=(), exclusion=()):
    return {**BASE, "inclusion": list(inclusion), "exclusion": list(exclusion)}


# --- the data: find narrow criteria in the synthetic hospital, so tests follow the data ------


@pytest.fixture(scope="module")
def store(tmp_path_factory, synth_dir):
    path = tmp_path_factory.mktemp("store") / "h1.duckdb"
    ingest_dir(path, synth_dir / "hospital_1")
    return path


@pytest.fixture(scope="module")
def con(store):
    connection = duckdb.connect(str(store), read_only=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def ages(con):
    """Persons in the base cohort by age at index."""
    q = compile_cohort(load_cohort(BASE))
    rows = con.execute(f"SELECT year(c.index_date) - p.year_of_birth AS age, count(*) "
                       f"FROM ({q.sql}) c JOIN person p USING (person_id) GROUP BY 1",
                       q.params).fetchall()
    return {int(age): int(n) for age, n in rows}


def persons_below(ages, age):
    return sum(n for a, n in ages.items() if a < age)


def persons_above(ages, age):
    return sum(n for a, n in ages.items() if a > age)


# --- a node -------------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path, store, con):
    state = NodeState.init(tmp_path / "h1.state.sqlite", clock=FixedClock(NOW), name="h1")
    hub_key = SigningKey.generate()
    state.pin_hub_key(hub_key.verify_key.encode().hex())
    state.set_policy(POLICY)

    def ask(cohort, task_id, consumer_org="pharma", **params):
        fields = dict(task_id=task_id, study_id=task_id, round=1, analysis="cohort_count",
                      params={"breakdown": False, **params}, cohort=cohort,
                      purpose="research", consumer="ana", consumer_org=consumer_org,
                      submitted_at=NOW.isoformat())
        body = TaskAssignment.model_validate(fields).model_dump(mode="json")
        body["hub_signature"] = sign_assignment(body, hub_key)
        return run_task(store, TaskAssignment.model_validate(body), site="h1", state=state,
                        clock=FixedClock(NOW), connection=con)

    ask.state = state
    return ask


def refused_by_defence(result, earlier_study):
    assert result.status == "refused" and result.partial is None  # no count leaves the node
    assert "differencing defence" in result.error
    assert f"fewer than {K} persons" in result.error and f"study {earlier_study}" in result.error
    return True


def ledger(state):
    with sqlite3.connect(state.path) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ledger_entries'").fetchone():
            return []  # the ledger's tables appear with its first entry
        return [(action, subject) for action, subject in db.execute(
            "SELECT action, subject FROM ledger_entries ORDER BY seq")]


# --- attacks ------------------------------------------------------------------------------


def test_classic_attack_is_refused_and_the_refusal_reveals_nothing(node, ages):
    """The target is the youngest person; 'A without target' is A with age ≥ youngest + 1."""
    young = min(ages)
    assert 1 <= ages[young] < K
    full = node(BASE, 1)
    assert full.status == "completed" and full.partial["count"] == sum(ages.values())
    without_target = node(with_criteria([{"age": {"min": young + 1}}]), 2)
    assert refused_by_defence(without_target, 1)
    # The attacker's control: a criterion removing nobody (the target not in A). It is refused
    # alike, so refused-or-not does not tell whether the target was in the cohort.
    removes_nobody = node(with_criteria([{"age": {"min": young}}]), 3)
    assert refused_by_defence(removes_nobody, 1)
    assert removes_nobody.error == without_target.error
    assert ("differencing.refused", "study:2/round:1/task:2") in ledger(node.state)


def test_narrow_exclusion_is_refused(node, con):
    q = compile_cohort(load_cohort(BASE))
    rows = con.execute(
        f"SELECT v.vocabulary_id || ':' || v.concept_code, count(DISTINCT o.person_id) AS n "
        f"FROM ({q.sql}) c JOIN condition_occurrence o USING (person_id) "
        f"JOIN concept v ON v.concept_id = o.condition_concept_id GROUP BY 1 "
        f"HAVING n < {K} ORDER BY n, 1 LIMIT 1", q.params).fetchall()
    assert rows, "the synthetic data should hold a rare condition in the cohort"
    code = rows[0][0]
    assert node(BASE, 1).status == "completed"
    narrowed = node(with_criteria(exclusion=[{"condition": {"codes": [code]}}]), 2)
    assert refused_by_defence(narrowed, 1)


def test_narrow_inclusion_is_refused(node, ages):
    oldest = max(ages)
    cut = next(a for a in sorted(ages, reverse=True) if 0 < persons_above(ages, a) < K)
    assert cut < oldest
    assert node(BASE, 1).status == "completed"
    assert refused_by_defence(node(with_criteria([{"age": {"max": cut}}]), 2), 1)


def test_age_band_shift_by_one_year_is_refused(node, ages):
    """Bands [lo, lo+9] and [lo+1, lo+10] differ by the persons aged lo and lo+10."""
    def band(lo):
        return sum(n for a, n in ages.items() if lo <= a <= lo + 9)

    lo = next(lo for lo in range(120) if band(lo) >= K and band(lo + 1) >= K
              and 0 < ages.get(lo, 0) + ages.get(lo + 10, 0) < K)
    first = node(with_criteria([{"age": {"min": lo, "max": lo + 9}}]), 1)
    assert first.status == "completed" and first.partial["count"] == band(lo)
    shifted = node(with_criteria([{"age": {"min": lo + 1, "max": lo + 10}}]), 2)
    assert refused_by_defence(shifted, 1)


def test_different_cohorts_and_the_same_cohort_again_are_released(node, ages):
    assert node(BASE, 1).status == "completed"
    women = node(with_criteria([{"sex": "F"}]), 2)  # hundreds fewer: a different question
    assert women.status == "completed"
    again = node(BASE, 3)  # the same question: the same answer, nothing new
    assert again.status == "completed" and again.partial["count"] == sum(ages.values())
    older = node(with_criteria([{"age": {"min": 60}}]), 4)
    assert persons_below(ages, 60) >= K and older.status == "completed"


def test_another_consumer_is_unaffected(node, ages):
    young = min(ages)
    assert node(BASE, 1).status == "completed"
    other = node(with_criteria([{"age": {"min": young + 1}}]), 2, consumer_org="insurer")
    assert other.status == "completed"
    assert refused_by_defence(node(with_criteria([{"age": {"min": young + 1}}]), 3), 1)


def test_noised_counts_are_not_refused_and_not_remembered(node, ages):
    young = min(ages)
    assert node(BASE, 1).status == "completed"
    attack = with_criteria([{"age": {"min": young + 1}}])
    dp = node(attack, 2, dp_epsilon=1.0)
    assert dp.status == "completed" and dp.partial["dp"] is True
    obfuscated = node(attack, 3, obfuscate=True)
    assert obfuscated.status == "completed" and obfuscated.partial["obfuscated"] is True
    remembered = ReleaseMemory.for_state(node.state).releases("pharma")
    assert [r["study_id"] for r in remembered] == [1]


def test_retries_are_recorded_once_and_failures_not_at_all(node):
    assert node(BASE, 1).status == "completed"
    assert node(BASE, 1).status == "completed"  # a retried task: the same release
    bad = node({"entry": {"condition": {"codes": ["E11"]}}}, 2)  # invalid: nothing released
    assert bad.status == "refused" and "differencing" not in bad.error
    releases = ReleaseMemory.for_state(node.state).releases()
    assert [(r["study_id"], r["consumer"], r["min_cell"]) for r in releases] == [
        (1, "pharma", K)]
    assert not any(a.startswith("differencing") for a, _ in ledger(node.state))


def test_the_policy_can_turn_the_defence_off(node, ages):
    node.state.set_policy(POLICY.model_copy(update={"differencing": "off"}))
    assert node(BASE, 1).status == "completed"
    assert node(with_criteria([{"age": {"min": min(ages) + 1}}]), 2).status == "completed"


def test_simulation_applies_the_defence_across_studies(synth_dir, ages):
    site = load_site(synth_dir / "hospital_1")
    site.releases = ReleaseMemory.in_memory()
    try:
        params = {"breakdown": False}
        first = simulate("cohort_count", {"h1": site}, params=params, cohort=BASE)
        assert first["total"] == sum(ages.values())
        with pytest.raises(Refused, match="site h1 refused round 1: .*differencing defence"):
            simulate("cohort_count", {"h1": site}, params=params,
                     cohort=with_criteria([{"age": {"min": min(ages) + 1}}]))
        assert simulate("cohort_count", {"h1": site}, params=params, cohort=BASE)["total"]
    finally:
        site.con.close()


# --- the memory itself, on both backends ----------------------------------------------------


@pytest.fixture(params=["in_memory", "state_file"])
def memory(request, tmp_path):
    clock = FixedClock(NOW)
    if request.param == "in_memory":
        return ReleaseMemory.in_memory(clock=clock, retention_days=30)
    state = NodeState.init(tmp_path / "m.state.sqlite", clock=clock, name="m")
    return ReleaseMemory.for_state(state, retention_days=30)


def test_memory_rules(memory):
    a = list(range(100))
    memory.record("org", (1, 1, 1), a, K, "fa")
    with pytest.raises(NearDuplicateRelease) as info:
        memory.check("org", a[1:], K, "fb")
    assert info.value.earlier_studies == [1]
    with pytest.raises(NearDuplicateRelease) as five:
        memory.check("org", a[5:], K, "fb")
    assert five.value.message == info.value.message  # the size of the difference stays hidden
    with pytest.raises(NearDuplicateRelease):
        memory.check("org", a, K, "fb")  # the same persons under another definition
    memory.check("org", a, K, "fa")  # the same definition again
    memory.check("org", a[K:], K, "fb")  # differs by k
    memory.check("org", a[:-1], K, "fb", key=(1, 1, 1))  # a retry is not its own conflict
    memory.check("other", a[1:], K, "fb")


def test_small_cohorts_both_suppressed_do_not_conflict(memory):
    memory.record("org", (1, 1, 1), [1, 2, 3], K, "fa")
    memory.check("org", [1, 2, 3, 4], K, "fb")  # "<10" twice: nothing to subtract
    memory.record("org", (2, 1, 2), list(range(10)), K, "fc")
    with pytest.raises(NearDuplicateRelease):
        memory.check("org", list(range(9)), K, "fd")  # 10 released, then "<10"


def test_retention_forgets_old_releases(memory):
    memory.record("org", (1, 1, 1), list(range(50)), K, "fa")
    memory.clock.advance(days=31)
    memory.check("org", list(range(49)), K, "fb")
    assert memory.releases() == []


def test_packed_sets_round_trip_and_stay_small():
    ids = np.random.default_rng(1).choice(10_000_000, size=5_000, replace=False)
    blob = pack(ids)
    assert np.array_equal(unpack(blob), np.sort(ids)) and len(blob) < 5_000 * 8
    assert fingerprint({"b": 1, "a": [1]}) == fingerprint({"a": [1], "b": 1})
