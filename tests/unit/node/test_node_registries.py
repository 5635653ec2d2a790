"""Registries materialised on a node: the files, their sizes checked against plain SQL on the
store, refresh on re-ingest and schedule, and tasks reading the registry's rows giving exactly
what the live (compiled) path gives — with consent and minimum cell size applied the same."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from nacl.signing import SigningKey

from healthspace.analyses.execute import run_local
from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import open_store
from healthspace.client.studyfile import read_document
from healthspace.core.clock import FixedClock
from healthspace.core.envelope import sign_assignment
from healthspace.core.models import RegistryRef, TaskAssignment
from healthspace.core.registry_defs import RegistrySpec, RegistryView
from healthspace.governance.consent import ConsentRecord
from healthspace.governance.consent_filter import ConsentFilter
from healthspace.governance.policy import ConsentTier, UsagePolicy
from healthspace.node import consent, registries
from healthspace.node.registries import Shelf
from healthspace.node.registry_refresh import RegistryKeeper
from healthspace.node.runner import execute_task
from healthspace.node.state import NodeState

EXAMPLES = Path(__file__).resolve().parents[3] / "src" / "healthspace" / "examples" / "registries"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
PERSON_TABLES = ("person", "observation_period", "visit_occurrence", "condition_occurrence",
                 "drug_exposure", "procedure_occurrence", "measurement", "death", "identity")
# Independent of the cohort compiler: first E11 / C34 code, adult at it (year of the index
# minus year of birth, docs/cohorts.md), inside an observation period.
REFERENCE = """
WITH first AS (
  SELECT person_id, MIN(condition_start_date) AS d FROM condition_occurrence
  WHERE condition_source_value LIKE ? GROUP BY person_id)
SELECT COUNT(*) FROM first f JOIN person p ON p.person_id = f.person_id
WHERE YEAR(f.d) - p.year_of_birth >= 18 AND EXISTS (
  SELECT 1 FROM observation_period o WHERE o.person_id = f.person_id
  AND o.observation_period_start_date <= f.d AND o.observation_period_end_date >= f.d)"""
PREFIX = {"t2d_complications": "E11%", "lung_cancer_lines": "C34%"}


def view(name: str, version: int = 1, **change: Any) -> RegistryView:
    spec = RegistrySpec.model_validate({**read_document(EXAMPLES / f"{name}.yaml"), **change})
    return RegistryView(name=spec.name, title=spec.title, cohort=spec.cohort,
                        dataset=spec.dataset, refresh=spec.refresh, version=version,
                        digest=spec.digest(), created_at=NOW, created_by="operator",
                        first_registered_at=NOW, participants=["h2"])


def reference(store: Path, name: str) -> int:
    con = duckdb.connect(str(store), read_only=True)
    try:
        row = con.execute(REFERENCE, [PREFIX[name]]).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


def half_site(source: Path, out: Path) -> Path:
    """The site's CSVs with every other person only (to ingest the rest later)."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for path in source.glob("*.csv"):
        target = (out / path.name).as_posix()
        if path.stem in PERSON_TABLES:
            con.execute(f"COPY (SELECT * FROM read_csv('{path.as_posix()}', all_varchar = true) "
                        f"WHERE CAST(person_id AS BIGINT) % 2 = 0) TO '{target}' (HEADER)")
        else:
            (out / path.name).write_bytes(path.read_bytes())
    con.close()
    return out


@pytest.fixture(scope="module")
def store(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry_node") / "h2.duckdb"
    ingest_dir(path, synth_dir / "hospital_2")
    return path


@pytest.fixture
def state(tmp_path: Path) -> NodeState:
    node = NodeState.init(tmp_path / "h2.state.sqlite", clock=FixedClock(NOW))
    node.set_policy(UsagePolicy(approval_mode="auto", allowed_purposes=["research"]))
    return node


def keeper(folder: Path, state: NodeState, *definitions: RegistryView) -> RegistryKeeper:
    kept = RegistryKeeper(folder, site="h2", state=state)
    kept.set_definitions(list(definitions))
    return kept


def mtime(store: Path) -> float:
    return store.stat().st_mtime


def test_both_examples_materialise_with_the_reference_sizes(store: Path, state: NodeState,
                                                            tmp_path: Path) -> None:
    kept = keeper(tmp_path / "h2.registries", state, view("t2d_complications"),
                  view("lung_cancer_lines"))
    con = open_store(store)
    done = kept.refresh_due(con, mtime(store), budget=None)
    assert [o.name for o in done] == ["lung_cancer_lines", "t2d_complications"]
    assert all(o.error is None and o.made is not None for o in done)
    for outcome in done:
        made = outcome.made
        assert made is not None
        expected = reference(store, made.name)
        assert made.persons == expected > 10
        assert 0 < made.rows <= made.persons
        assert made.size == int(round(expected / 10) * 10)  # released, rounded to 10
        file = duckdb.connect(str(made.path), read_only=True)
        columns = [r[0] for r in file.execute("DESCRIBE dataset").fetchall()]
        assert columns[:2] == ["person_id", "index_date"]
        assert file.execute("SELECT COUNT(*) FROM cohort").fetchone() == (expected,)
        file.close()
    assert not list((tmp_path / "h2.registries").glob(".*tmp*"))  # swapped in, no leftovers
    assert kept.refresh_due(con, mtime(store)) == []  # fresh: nothing due
    con.close()


def test_a_small_registry_is_reported_suppressed(store: Path, state: NodeState,
                                                 tmp_path: Path) -> None:
    state.set_policy(UsagePolicy(approval_mode="auto", min_cell_size=100000))
    kept = keeper(tmp_path / "regs", state, view("lung_cancer_lines"))
    con = open_store(store)
    kept.refresh_due(con, mtime(store))
    con.close()
    [status] = kept.status()
    assert status.size == "<100000" and status.dataset_size == "<100000"


def test_refresh_picks_up_newly_ingested_persons(synth_dir: Path, state: NodeState,
                                                 tmp_path: Path) -> None:
    store = tmp_path / "grow.duckdb"
    ingest_dir(store, half_site(synth_dir / "hospital_2", tmp_path / "half"))
    kept = keeper(tmp_path / "grow.registries", state, view("t2d_complications"))
    con = open_store(store)
    [first] = kept.refresh_due(con, mtime(store))
    con.close()
    assert first.made is not None and first.made.persons == reference(store, "t2d_complications")
    before = first.made.persons
    ingest_dir(store, synth_dir / "hospital_2")  # the rest of the site's persons arrive
    after = reference(store, "t2d_complications")
    assert after > before
    con = open_store(store)
    [again] = kept.refresh_due(con, mtime(store))
    con.close()
    assert again.reason == "the store was re-ingested"
    assert again.made is not None and again.made.persons - before == after - before


def test_due_on_new_version_and_on_schedule(store: Path, state: NodeState,
                                            tmp_path: Path) -> None:
    old = view("lung_cancer_lines")
    kept = keeper(tmp_path / "regs", state, old)
    assert kept.due(old, None, 1.0) == "not materialised yet"
    con = open_store(store)
    kept.refresh_due(con, mtime(store))
    made = kept.materialised(old.name)
    assert kept.due(old, made, mtime(store)) is None
    newer = view("lung_cancer_lines", version=2, title="renamed")
    assert kept.due(newer, made, mtime(store)) == "new version v2"
    assert kept.due(old, made, mtime(store) + 1) == "the store was re-ingested"
    quiet = view("lung_cancer_lines", refresh={"every_hours": 2, "on_ingest": False})
    quiet = quiet.model_copy(update={"digest": old.digest})
    assert kept.due(quiet, made, mtime(store) + 1) is None  # not on ingest: waits
    assert isinstance(state.clock, FixedClock)
    state.clock.advance(seconds=7200)
    assert kept.due(quiet, made, mtime(store)) == "scheduled (every 2 h)"
    kept.set_definitions([])  # no longer taking part: the file goes
    assert registries.materialised(tmp_path / "regs") == []
    con.close()


def test_a_failed_refresh_is_reported_and_not_retried_at_once(store: Path, state: NodeState,
                                                              tmp_path: Path) -> None:
    bad = view("lung_cancer_lines").model_copy(update={"digest": "00" * 32})
    kept = keeper(tmp_path / "regs", state, bad)
    con = open_store(store)
    [failed] = kept.refresh_due(con, mtime(store))
    assert failed.made is None and failed.error and "digest" in failed.error
    assert kept.refresh_due(con, mtime(store)) == []  # blocked until RETRY_S or a change
    con.close()
    [status] = kept.status()
    assert status.version is None and status.error == failed.error


def test_a_reader_of_the_old_file_is_never_disturbed(store: Path, state: NodeState,
                                                     tmp_path: Path) -> None:
    kept = keeper(tmp_path / "regs", state, view("lung_cancer_lines"))
    con = open_store(store)
    kept.refresh_due(con, mtime(store))
    path = registries.file_of(tmp_path / "regs", "lung_cancer_lines")
    reader = duckdb.connect(str(path), read_only=True)
    before = reader.execute("SELECT COUNT(*), MIN(person_id) FROM dataset").fetchone()
    kept.refresh_due(con, mtime(store), force=True)  # a new file replaces it meanwhile
    assert reader.execute("SELECT COUNT(*), MIN(person_id) FROM dataset").fetchone() == before
    reader.close()
    con.close()


# --- tasks reading registry rows --------------------------------------------------------------


def task(definition: RegistryView, analysis: str, params: dict[str, Any], *,
         with_dataset: bool = True, ref: RegistryRef | None = None,
         key: SigningKey | None = None, task_id: int = 7) -> TaskAssignment:
    fields = dict(task_id=task_id, study_id=3, round=1, analysis=analysis, params=params,
                  cohort=definition.cohort, dataset=definition.dataset if with_dataset else None,
                  registry=ref or definition.ref(), purpose="research", consumer="ana",
                  consumer_org="pharma", submitted_at=NOW.isoformat(), min_cell_size=10)
    body = TaskAssignment.model_validate(fields).model_dump(mode="json")
    if key is not None:
        body["hub_signature"] = sign_assignment(body, key)
    return TaskAssignment.model_validate(body)


CASES = [
    ("t2d_complications", "cohort_count", {"breakdown": True}, False),
    ("t2d_complications", "summary",
     {"variables": ["age", "hba1c", "egfr", "days"], "categorical": ["first_line", "ckd"],
      "by": "male"}, True),
    ("t2d_complications", "glm", {"formula": "kidney_complication ~ age + male + ckd + statin",
                                  "family": "binomial"}, True),
    ("lung_cancer_lines", "km", {"duration": "days", "event": "death"}, True),
    ("lung_cancer_lines", "summary", {"variables": ["age", "days"],
                                      "categorical": ["first_line", "erlotinib_second_line"]},
     True),
]


def _run(con: Any, item: TaskAssignment, flt: ConsentFilter | None, rows: Any) -> dict[str, Any]:
    run = run_local(con, site="h2", analysis=item.analysis, params=item.params,
                    cohort=item.cohort, dataset=item.dataset, consent=flt, registry=rows,
                    min_cell_size=10)
    return {"partial": run.partial, "records": run.records}


@pytest.mark.parametrize(("name", "analysis", "params", "with_dataset"), CASES)
def test_registry_rows_give_the_live_answer_with_consent(
        store: Path, state: NodeState, tmp_path: Path, name: str, analysis: str,
        params: dict[str, Any], with_dataset: bool) -> None:
    definition = view(name)
    kept = keeper(tmp_path / "regs", state, definition)
    con = open_store(store)
    kept.refresh_due(con, mtime(store))
    item = task(definition, analysis, params, with_dataset=with_dataset)
    # Withdraw a fifth of the registry's persons: consent applies at query time.
    file = duckdb.connect(str(registries.file_of(tmp_path / "regs", name)), read_only=True)
    people = [int(r[0]) for r in file.execute(
        "SELECT person_id FROM cohort WHERE person_id % 5 = 0").fetchall()]
    file.close()
    flt = ConsentFilter.build([ConsentRecord(person_id=p, tier="withheld") for p in people],
                              ConsentTier.OPEN, "research")
    shelf = Shelf(tmp_path / "regs", mtime(store))
    for consent_filter in (None, flt):
        live = _run(con, item, consent_filter, None)
        rows = shelf.attach(con, item)
        assert rows is not None
        try:
            assert _run(con, item, consent_filter, rows) == live
        finally:
            shelf.detach(con, rows)
    assert _run(con, item, flt, None)["records"] < _run(con, item, None, None)["records"]
    con.close()


def test_no_matching_materialisation_means_live_and_a_log_line(
        store: Path, state: NodeState, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    definition = view("lung_cancer_lines")
    kept = keeper(tmp_path / "regs", state, definition)
    con = open_store(store)
    shelf = Shelf(tmp_path / "regs", mtime(store))
    item = task(definition, "cohort_count", {}, with_dataset=False)
    with caplog.at_level(logging.INFO, logger="healthspace.node"):
        assert shelf.attach(con, item) is None
    assert "not materialised here; computing live" in caplog.text
    kept.refresh_due(con, mtime(store))
    newer = RegistryRef(name=definition.name, version=2, digest=definition.digest)
    assert shelf.usable(task(definition, "cohort_count", {}, ref=newer)) == \
        "materialised v1, the task needs v2"
    other = task(view("t2d_complications"), "cohort_count", {}, ref=definition.ref())
    assert shelf.usable(other) == "the task's definition differs from the materialised one"
    assert Shelf(tmp_path / "regs", mtime(store) + 1).usable(item) == \
        "the store changed since the last refresh"
    assert isinstance(shelf.usable(item), registries.Materialised)
    con.close()


def test_the_runner_reads_registry_rows_under_the_nodes_own_rules(
        store: Path, state: NodeState, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Through execute_task: policy re-check, consent from the state, the node's k."""
    hub_key = SigningKey.generate()
    state.pin_hub_key(hub_key.verify_key.encode().hex())
    definition = view("lung_cancer_lines")
    kept = keeper(tmp_path / "regs", state, definition)
    con = open_store(store)
    kept.refresh_due(con, mtime(store))
    made = kept.materialised(definition.name)
    assert made is not None
    file = duckdb.connect(str(made.path), read_only=True)
    people = [int(r[0]) for r in file.execute("SELECT person_id FROM cohort LIMIT 7").fetchall()]
    file.close()
    consent.upsert(state, [ConsentRecord(person_id=p, tier="withheld") for p in people])
    item = task(definition, "cohort_count", {}, with_dataset=False, key=hub_key)
    shelf = Shelf(tmp_path / "regs", mtime(store))
    with caplog.at_level(logging.INFO, logger="healthspace.node"):
        via = execute_task(store, item, site="h2", state=state, clock=FixedClock(NOW),
                           connection=con, registries=shelf)
    assert "rows from registry lung_cancer_lines v1" in caplog.text
    live = execute_task(store, item, site="h2", state=state, clock=FixedClock(NOW),
                        connection=con)
    assert via.result.status == "completed" and via.result.partial == live.result.partial
    assert via.result.partial is not None
    assert via.result.partial["count"] == made.persons - 7
    state.set_policy(UsagePolicy(approval_mode="auto", min_cell_size=100000))
    again = task(definition, "cohort_count", {}, with_dataset=False, key=hub_key, task_id=8)
    small = execute_task(store, again, site="h2", state=state, clock=FixedClock(NOW),
                         connection=con, registries=shelf)
    assert small.result.partial is not None and small.result.partial["count"] == "<100000"
    con.close()


def test_the_keeper_keeps_definitions_for_offline_refresh(state: NodeState,
                                                          tmp_path: Path) -> None:
    kept = keeper(tmp_path / "regs", state, view("t2d_complications"))
    again = RegistryKeeper(tmp_path / "regs", site="h2", state=state)
    again.load_cached()
    assert again.definitions == kept.definitions
    assert (NOW + timedelta(0)).tzinfo is UTC
