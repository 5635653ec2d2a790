"""Simulation on node stores: a DuckDB store answers like the CSV folder it was ingested from,
under the policy and consent of the state file beside it."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import state_path
from healthspace.cli.main import run
from healthspace.core.errors import InvalidInput
from healthspace.governance.policy import UsagePolicy
from healthspace.node import consent as node_consent
from healthspace.node.state import NodeState
from healthspace.sim import simulate_dirs

COHORT = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}


@pytest.fixture(scope="module")
def store(synth_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sim_store") / "h1.duckdb"
    ingest_dir(path, synth_dir / "hospital_1")
    return path


def reference(site: Path) -> int:
    """Persons with an E11* diagnosis, by hand over the CSV files."""
    return int(duckdb.connect().execute(f"""
        SELECT count(DISTINCT o.person_id)
        FROM read_csv_auto('{site}/condition_occurrence.csv') o
        JOIN read_csv_auto('{site}/concept.csv') c
          ON c.concept_id IN (o.condition_concept_id, o.condition_source_concept_id)
        WHERE c.vocabulary_id = 'ICD10' AND starts_with(c.concept_code, 'E11')
          AND o.person_id IN (SELECT person_id FROM read_csv_auto('{site}/person.csv'))
    """).fetchone()[0])


def test_a_store_answers_like_its_folder(synth_dir, store) -> None:
    folder = simulate_dirs("cohort_count", {"h1": synth_dir / "hospital_1"}, cohort=COHORT)
    stored = simulate_dirs("cohort_count", {"h1": store}, cohort=COHORT)
    assert stored == folder
    assert stored["sites"]["h1"] == reference(synth_dir / "hospital_1") > 10


def test_the_state_files_policy_and_consent_apply(synth_dir, tmp_path) -> None:
    path = tmp_path / "h1.duckdb"
    ingest_dir(path, synth_dir / "hospital_1")
    state = NodeState.init(state_path(path))
    state.set_policy(UsagePolicy(min_cell_size=12, allowed_purposes=["research"]))
    con = duckdb.connect(str(path), read_only=True)
    withheld = [r[0] for r in con.execute(
        "SELECT DISTINCT p.person_source_value FROM condition_occurrence o "
        "JOIN person p USING (person_id) JOIN concept c ON c.concept_id = o.condition_concept_id "
        "WHERE c.concept_code LIKE 'E11%' ORDER BY 1 LIMIT 7").fetchall()]
    con.close()
    consent = tmp_path / "consent.csv"
    consent.write_text("person_source_value,tier\n" + "".join(f"{v},withheld\n" for v in withheld))
    node_consent.import_csv(state, consent)
    result = simulate_dirs("cohort_count", {"h1": path}, cohort=COHORT)
    assert result["sites"]["h1"] == reference(synth_dir / "hospital_1") - 7
    assert result["min_cell_size"] == {"h1": 12}
    refused = simulate_dirs("cohort_count", {"h1": path}, cohort=COHORT,
                            purpose="drug_development")  # the state's policy decides
    assert refused["sites"] == {} and "drug_development" in refused["refused"]["h1"]


def test_bad_stores_name_the_option(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    with pytest.raises(InvalidInput) as bad:
        simulate_dirs("cohort_count", {"x": junk}, cohort=COHORT)
    assert bad.value.field == "site"
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(InvalidInput, match="no person table"):
        simulate_dirs("cohort_count", {"x": empty}, cohort=COHORT)
    cohort = tmp_path / "c.json"
    cohort.write_text(json.dumps(COHORT))
    assert run(["sim", "count", f"--site=x={tmp_path / 'missing.duckdb'}", "--cohort",
                str(cohort)]) == 2
    assert "does not exist" in capsys.readouterr().err
