"""The node's meter, checked against independent DuckDB counts on an ingested hospital.

records_scanned is the full row count of every store table the task's queries read; persons is
the cohort count as the node may release it (exact, 0 when suppressed, a band of 100 when
withheld under secure aggregation); bytes is the canonical JSON size of the TaskResult; ε is
what the node's budget ledger charged.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from nacl.signing import SigningKey

from healthspace.analyses.base import LocalContext
from healthspace.cdm.ingest import ingest_dir, ingest_table
from healthspace.cohort.dataset import build_analysis_table, load_dataset
from healthspace.cohort.models import load_cohort
from healthspace.core.canonical import canonical_json
from healthspace.core.clock import FixedClock
from healthspace.core.envelope import sign_assignment
from healthspace.core.models import RosterEntry, SecureRound, TaskAssignment, TaskResult
from healthspace.governance.consent import ConsentRecord
from healthspace.governance.policy import UsagePolicy
from healthspace.node import consent, secagg
from healthspace.node.metering import PERSONS_BAND, build_meter, released_persons
from healthspace.node.runner import Execution, execute_task
from healthspace.node.state import NodeState
from healthspace.privacy.secagg_keys import make_prekey

NOW = datetime(2026, 3, 30, 12, tzinfo=UTC)
K = 10
# Type 2 diabetes at 40 or over, with 30 days of prior observation.
COHORT = {"entry": {"condition": {"codes": ["ICD10:E11%"]}},
          "inclusion": [{"age": {"min": 40}},
                        {"observation_period": {"min_prior_observation_days": 30}}]}
# What its compiled SQL reads: the code lookup, the entry events, the age / final join, the
# observation criterion (the breakdown joins person again).
COHORT_TABLES = ("concept", "condition_occurrence", "person", "observation_period")
RARE = {"entry": {"condition": {"codes": ["ICD10:N18.5"]}}}  # a handful of persons
RARE_TABLES = ("concept", "condition_occurrence", "person")
# The example GLM study's cohort (drug starters, adults, in observation) and dataset
# (age, sex, three condition flags, a statin flag, HbA1c, the drug started, incident heart
# failure censored at observation end or death).
DATASET_TABLES = ("concept", "drug_exposure", "person", "observation_period",
                  "condition_occurrence", "measurement", "death")


def example(name: str) -> dict[str, Any]:
    text = resources.files("healthspace.examples").joinpath(name).read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


# Independent SQL for the cohorts above, written from their definitions.
E11_PERSONS_SQL = """
WITH codes AS (SELECT concept_id FROM concept
               WHERE vocabulary_id = 'ICD10' AND concept_code LIKE 'E11%'),
entry AS (SELECT person_id, min(condition_start_date) AS index_date
          FROM condition_occurrence
          WHERE condition_concept_id IN (SELECT concept_id FROM codes)
             OR condition_source_concept_id IN (SELECT concept_id FROM codes)
          GROUP BY person_id)
SELECT DISTINCT e.person_id, p.person_source_value
FROM entry e JOIN person p USING (person_id)
WHERE year(e.index_date) - p.year_of_birth >= 40
  AND EXISTS (SELECT 1 FROM observation_period op WHERE op.person_id = e.person_id
              AND op.observation_period_start_date <= e.index_date - 30
              AND op.observation_period_end_date >= e.index_date)
ORDER BY e.person_id
"""
RARE_COUNT_SQL = """
SELECT count(DISTINCT co.person_id) FROM condition_occurrence co
JOIN person p USING (person_id)
WHERE co.condition_concept_id IN (SELECT concept_id FROM concept
                                  WHERE vocabulary_id = 'ICD10' AND concept_code = 'N18.5')
   OR co.condition_source_concept_id IN (SELECT concept_id FROM concept
                                         WHERE vocabulary_id = 'ICD10'
                                         AND concept_code = 'N18.5')
"""


@dataclass(frozen=True)
class Truth:
    rows: dict[str, int]  # every stored table's row count
    cohort: list[tuple[int, str]]  # (person_id, person_source_value) of COHORT
    rare: int
    km_n: int  # rows of the example dataset with time and event known

    def scanned(self, tables: tuple[str, ...]) -> int:
        return sum(self.rows[t] for t in tables)


@pytest.fixture(scope="module")
def store(tmp_path_factory, synth_dir) -> Path:
    folder = tmp_path_factory.mktemp("metering")
    path = folder / "h3.duckdb"
    ingest_dir(path, synth_dir / "hospital_3")
    # A research table beside the CDM (ingest_table keeps the rest of the store). A dataset
    # task's own temp analysis_data shadows it: it must not be metered as read.
    table = folder / "registry.csv"
    table.write_text("time,event\n" + "".join(f"{i},{i % 2}\n" for i in range(1, 38)))
    ingest_table(path, table)
    return path


@pytest.fixture(scope="module")
def truth(store) -> Truth:
    con = duckdb.connect(str(store), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()]
        rows = {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
        cohort = [(int(pid), str(psv)) for pid, psv in con.execute(E11_PERSONS_SQL).fetchall()]
        rare = con.execute(RARE_COUNT_SQL).fetchone()[0]
        # The analysis table itself comes from the dataset builder (not under test here).
        study = example("gliclazide_hf_study.yaml")
        ctx = LocalContext(con=con, site="h3",
                           cohort=load_cohort(example(study["cohort_path"])))
        build_analysis_table(ctx, load_dataset(example(study["dataset_path"])))
        km_n = con.execute("SELECT count(*) FROM temp.analysis_data "
                           "WHERE time IS NOT NULL AND event IS NOT NULL").fetchone()[0]
    finally:
        con.close()
    assert rows["analysis_data"] == 37 and rows["person"] > 0
    assert len(cohort) >= 100 and 0 < rare < K and km_n >= 100
    return Truth(rows=rows, cohort=cohort, rare=rare, km_n=km_n)


@pytest.fixture
def node(tmp_path):
    state = NodeState.init(tmp_path / "n.state.sqlite", clock=FixedClock(NOW), name="h3")
    key = SigningKey.generate()
    state.pin_hub_key(key.verify_key.encode().hex())
    state.set_policy(UsagePolicy(approval_mode="auto"))
    return state, key


def assignment(key: SigningKey | None = None, task_id: int = 1, **overrides: Any
               ) -> TaskAssignment:
    fields: dict[str, Any] = dict(
        task_id=task_id, study_id=task_id, round=1, analysis="cohort_count", params={},
        cohort=COHORT, purpose="research", consumer="ana", consumer_org="pharma",
        submitted_at=NOW.isoformat(), min_cell_size=K)
    fields.update(overrides)
    body = TaskAssignment.model_validate(fields).model_dump(mode="json")
    if key is not None:
        body["hub_signature"] = sign_assignment(body, key)
    return TaskAssignment.model_validate(body)


def run(store: Path, task: TaskAssignment, state: NodeState | None = None) -> Execution:
    return execute_task(store, task, site="h3", state=state, min_cell_size=K,
                        clock=FixedClock(NOW))


def result_bytes(result: TaskResult) -> int:
    return len(canonical_json(result.model_dump(mode="json")))


def assert_unrun(execution: Execution, status: str, analysis: str = "cohort_count") -> None:
    """A task that never ran: metered with its status, its payload size, nothing read."""
    result, meter = execution.result, execution.meter
    assert result.status == status and meter.status == status
    assert meter.analysis == analysis and meter.preview is False
    assert (meter.records_scanned, meter.persons, meter.persons_band, meter.epsilon) == (
        0, 0, None, 0.0)
    assert meter.bytes == result_bytes(result) and meter.seconds >= 0


# --- completed counts ------------------------------------------------------------------------


def test_cohort_count_with_the_node_state_is_metered_exactly(store, truth, node):
    state, key = node
    execution = run(store, assignment(key), state)
    result, meter = execution.result, execution.meter
    assert result.status == "completed", result.error
    assert (result.partial or {})["count"] == len(truth.cohort)
    assert meter.records_scanned == truth.scanned(COHORT_TABLES)
    # Neither the other CDM tables nor the research table were read.
    assert meter.records_scanned < sum(truth.rows.values()) - truth.rows["analysis_data"]
    assert meter.persons == len(truth.cohort) == result.metrics.records
    assert meter.persons_band is None
    assert meter.bytes == result_bytes(result)
    assert meter.seconds > 0 and meter.seconds == pytest.approx(result.metrics.seconds,
                                                                abs=1e-6)
    assert (meter.analysis, meter.status, meter.preview, meter.epsilon) == (
        "cohort_count", "completed", False, 0.0)


def test_without_a_state_the_meter_is_the_same(store, truth):
    execution = run(store, assignment())
    meter = execution.meter
    assert execution.result.status == "completed", execution.result.error
    assert meter.records_scanned == truth.scanned(COHORT_TABLES)
    assert meter.persons == len(truth.cohort) == execution.result.metrics.records
    assert meter.bytes == result_bytes(execution.result) and meter.seconds > 0


def test_consent_lowers_persons_but_not_the_rows_scanned(store, truth, node):
    state, key = node
    withheld = truth.cohort[:17]
    consent.upsert(state, [ConsentRecord(person_source_value=psv, tier="withheld")
                           for _, psv in withheld])
    execution = run(store, assignment(key), state)
    assert execution.result.status == "completed", execution.result.error
    # The consent filter's temp tables are not store tables; person was read anyway.
    assert execution.meter.records_scanned == truth.scanned(COHORT_TABLES)
    assert execution.meter.persons == len(truth.cohort) - 17
    assert execution.result.metrics.records == len(truth.cohort) - 17


def test_a_suppressed_count_meters_no_persons(store, truth, node):
    state, key = node
    execution = run(store, assignment(key, cohort=RARE), state)
    result, meter = execution.result, execution.meter
    assert result.status == "completed", result.error
    assert (result.partial or {})["count"] == f"<{K}"
    assert meter.persons == 0 == result.metrics.records and meter.persons_band is None
    assert meter.records_scanned == truth.scanned(RARE_TABLES)  # the rows were still read


# --- disclosure control of persons --------------------------------------------------------


@pytest.mark.parametrize(("persons", "secure", "released", "expected"), [
    (7, False, True, (0, None)),  # in clear, suppressed: it added nothing
    (7, False, False, (0, None)),  # own_count_released only matters under secure aggregation
    (10, False, True, (10, None)),
    (250, False, False, (250, None)),
    (7, True, False, (100, 100)),  # withheld under secure aggregation: rounded up to the band
    (100, True, False, (100, 100)),
    (101, True, False, (200, 100)),
    (250, True, False, (300, 100)),
    (0, True, False, (0, None)),
    (-3, True, False, (0, None)),
    (7, True, True, (100, 100)),  # released by policy but suppressed (< k): still a band
    (10, True, True, (10, None)),  # released and not suppressed: exact
    (157, True, True, (157, None)),
])
def test_released_persons(persons, secure, released, expected):
    assert released_persons(persons, K, secure=secure, own_count_released=released) == expected


def secure_node(tmp_path, key: SigningKey, release_site_counts: bool) -> tuple[NodeState, list]:
    state = NodeState.init(tmp_path / "s.state.sqlite", clock=FixedClock(NOW), name="h3")
    state.pin_hub_key(key.verify_key.encode().hex())
    state.set_policy(UsagePolicy(approval_mode="auto", release_site_counts=release_site_counts))
    peer = SigningKey.generate()
    entries = [RosterEntry(prekey=secagg.new_prekeys(state, "h3", 1)[0],
                           node_key=state.public_key_hex()),
               RosterEntry(prekey=make_prekey("peer", peer)[1],
                           node_key=peer.verify_key.encode().hex())]
    return state, entries


@pytest.mark.parametrize("release_site_counts", [False, True], ids=["withheld", "released"])
def test_secure_aggregation_bands_a_withheld_count(store, truth, tmp_path, release_site_counts):
    key = SigningKey.generate()
    state, entries = secure_node(tmp_path, key, release_site_counts)
    task = assignment(key, secure=SecureRound(session_id="study-1/r1", roster=entries))
    execution = run(store, task, state)
    result, meter = execution.result, execution.meter
    assert result.status == "completed", result.error
    assert "secure" in (result.partial or {})
    n = len(truth.cohort)
    if release_site_counts:
        assert (meter.persons, meter.persons_band) == (n, None)
    else:
        assert (meter.persons, meter.persons_band) == (
            PERSONS_BAND * math.ceil(n / PERSONS_BAND), PERSONS_BAND)
    assert result.metrics.records == meter.persons
    assert meter.records_scanned == truth.scanned(COHORT_TABLES)


def test_build_meter_copies_the_assignment_and_result():
    task = assignment(preview=True, analysis="cohort_count")
    result = TaskResult(status="completed", partial={"count": 40})
    meter = build_meter(task, result, records_scanned=123, persons=40, seconds=-1.0,
                        epsilon=0.25, k=K, own_count_released=True)
    assert (meter.analysis, meter.status, meter.preview) == ("cohort_count", "completed", True)
    assert (meter.records_scanned, meter.persons, meter.persons_band) == (123, 40, None)
    assert meter.seconds == 0.0 and meter.epsilon == 0.25
    assert meter.bytes == result_bytes(result)


# --- ε ----------------------------------------------------------------------------------------


def dp_charges(state: NodeState) -> dict[int, float]:
    with sqlite3.connect(state.path) as db:
        return {task_id: eps for task_id, eps in db.execute(
            "SELECT task_id, epsilon FROM dp_charges")}


def test_dp_meters_the_charged_epsilon_and_a_refusal_none(store, truth, node):
    state, key = node
    state.set_policy(UsagePolicy(approval_mode="auto",
                                 dp_budget={"epsilon_per_consumer": 1.0, "period": "month"}))
    execution = run(store, assignment(key, 1, params={"dp_epsilon": 0.75}), state)
    result, meter = execution.result, execution.meter
    assert result.status == "completed", result.error
    assert dp_charges(state) == {1: 0.75}
    assert meter.epsilon == 0.75 and (result.partial or {})["epsilon"] == 0.75
    # Persons is the noised count the node released, never the exact one.
    noisy = (result.partial or {})["count"]
    assert noisy >= K and meter.persons == noisy == result.metrics.records
    assert meter.records_scanned == truth.scanned(COHORT_TABLES)

    over = run(store, assignment(key, 2, params={"dp_epsilon": 0.5}), state)
    assert "only ε=0.25 of ε=1 remains" in (over.result.error or "")
    assert_unrun(over, "refused")
    assert dp_charges(state) == {1: 0.75}


def test_a_small_noised_count_is_metered_as_released(store, node):
    """DP and obfuscated releases are not suppressed: the meter carries what was released."""
    state, key = node
    state.set_policy(UsagePolicy(approval_mode="auto",
                                 dp_budget={"epsilon_per_consumer": 10.0, "period": "none"}))
    dp = run(store, assignment(key, 11, cohort=RARE, params={"dp_epsilon": 4.0}), state)
    released = (dp.result.partial or {})["count"]
    assert isinstance(released, int) and released < K  # 5 persons, a little noise (P(≥ 10) ≈ e⁻²⁰)
    assert dp.meter.persons == max(released, 0) == dp.result.metrics.records
    obfuscated = run(store, assignment(key, 12, params={"obfuscate": True}), state)
    shown = (obfuscated.result.partial or {})["count"]
    assert isinstance(shown, int) and obfuscated.meter.persons == shown


def test_a_charged_task_that_fails_is_refunded_and_meters_no_epsilon(store, node):
    state, key = node
    state.set_policy(UsagePolicy(approval_mode="auto",
                                 dp_budget={"epsilon_per_consumer": 1.0, "period": "month"}))
    bad = assignment(key, 3, params={"dp_epsilon": 0.5},
                     cohort={"entry": {"condition": {"codes": ["E11"]}}})  # no vocabulary
    execution = run(store, bad, state)
    assert_unrun(execution, "refused")
    assert dp_charges(state) == {}


# --- refused and failed tasks are metered too -------------------------------------------------


def test_refused_and_failed_tasks_get_a_meter(store, node, tmp_path):
    state, key = node
    state.set_policy(UsagePolicy(approval_mode="auto", allowed_purposes=["research"]))
    refused = run(store, assignment(key, purpose="commercial_insurance"), state)
    assert "commercial_insurance" in (refused.result.error or "")
    assert_unrun(refused, "refused")
    unsigned = run(store, assignment(SigningKey.generate(), 2), state)  # not the pinned hub
    assert_unrun(unsigned, "refused")
    failed = run(tmp_path / "missing.duckdb", assignment(key, 3), state)
    assert "does not exist" in (failed.result.error or "")
    assert_unrun(failed, "failed")
    no_state = run(store, assignment(secure=SecureRound(session_id="s", roster=secure_node(
        tmp_path, key, True)[1])))
    assert_unrun(no_state, "refused")
    km_refused = run(store, assignment(analysis="km", params={"duration": "time",
                                                              "event": "event"}))
    assert_unrun(km_refused, "refused", analysis="km")  # a cohort without a dataset


# --- a table analysis over a cohort and dataset ---------------------------------------------


def test_km_over_the_example_dataset(store, truth, node):
    state, key = node
    study = example("gliclazide_hf_study.yaml")
    task = assignment(key, analysis="km", params={"duration": "time", "event": "event"},
                      cohort=example(study["cohort_path"]),
                      dataset=example(study["dataset_path"]))
    execution = run(store, task, state)
    result, meter = execution.result, execution.meter
    assert result.status == "completed", result.error
    assert (result.partial or {})["all"]["n"] == truth.km_n
    assert meter.persons == truth.km_n == result.metrics.records
    # The CDM tables the cohort and dataset read; not the store's own analysis_data, which
    # the task's temp table of that name shadowed.
    assert meter.records_scanned == truth.scanned(DATASET_TABLES)
    assert (meter.analysis, meter.status) == ("km", "completed")
    assert meter.bytes == result_bytes(result) and meter.seconds > 0
