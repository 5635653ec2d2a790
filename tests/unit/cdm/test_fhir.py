"""FHIR R4 import: hand-built bundles and NDJSON for every mapped resource, and Synthea's files."""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.fhir import concept_id, stable_id
from healthspace.cdm.ingest_formats import ingest_fhir
from healthspace.cohort.compiler import compile_cohort
from healthspace.cohort.models import load_cohort
from healthspace.core.errors import IngestError

SYNTHEA = Path(
    os.environ.get("HEALTHSPACE_SHARED_DATA")
    or Path(__file__).resolve().parents[4] / "shared" / "data"
) / "synthea_fhir"
KEY = b"network-key-for-tests"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"


def code(system: str, value: str, display: str = "") -> dict:
    return {"coding": [{"system": system, "code": value, "display": display}]}


def bundle(*entries: tuple[str, dict], kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"fullUrl": url, "resource": r} for url, r in entries]}


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-04-02",
           "name": [{"family": "Li", "given": ["Mei"]}], "telecom": [{"value": "555-0100"}],
           "address": [{"line": ["1 Secret Road"], "city": "Springfield"}],
           "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"}],
           "deceasedDateTime": "2024-02-01T10:00:00+08:00"}
ENCOUNTER = {"resourceType": "Encounter", "id": "e1", "class": {"code": "IMP"},
             "subject": {"reference": "urn:uuid:aaaa-p1"},
             "period": {"start": "2023-05-01T08:00:00+08:00", "end": "2023-05-04T12:00:00+08:00"}}
CONDITION = {"resourceType": "Condition", "id": "c1", "code": code(ICD10CM, "E11.9", "T2D"),
             "subject": {"reference": "urn:uuid:aaaa-p1"},
             "encounter": {"reference": "urn:uuid:aaaa-e1"},
             "onsetDateTime": "2023-05-02T09:00:00+08:00"}
HBA1C = {"resourceType": "Observation", "id": "o1", "code": code(LOINC, "4548-4", "HbA1c"),
         "subject": {"reference": "urn:uuid:aaaa-p1"}, "effectiveDateTime": "2023-04-20",
         "valueQuantity": {"value": 8.1, "unit": "%"}}
BP = {"resourceType": "Observation", "id": "o2", "code": code(LOINC, "85354-9", "BP"),
      "subject": {"reference": "urn:uuid:aaaa-p1"}, "effectiveDateTime": "2023-05-02",
      "component": [{"code": code(LOINC, "8480-6"), "valueQuantity": {"value": 142}},
                    {"code": code(LOINC, "8462-4"), "valueQuantity": {"value": 91}}]}
SMOKER = {"resourceType": "Observation", "id": "o3", "code": code(LOINC, "72166-2"),
          "subject": {"reference": "urn:uuid:aaaa-p1"}, "effectiveDateTime": "2023-05-02",
          "valueCodeableConcept": code("http://snomed.info/sct", "8517006")}
CLAIM = {"resourceType": "Claim", "id": "cl1", "patient": {"reference": "urn:uuid:aaaa-p1"},
         "total": {"value": 1200.5, "currency": "CNY"},
         "item": [{"sequence": 1, "encounter": [{"reference": "urn:uuid:aaaa-e1"}]}]}
# NDJSON bulk export: relative references, a second encounter, medications and a procedure.
NDJSON = [
    {"resourceType": "Encounter", "id": "e2", "class": {"code": "AMB"},
     "subject": {"reference": "Patient/p1"}, "period": {"start": "2023-06-10"}},
    {"resourceType": "MedicationStatement", "id": "m1",
     "medicationCodeableConcept": code("http://www.whocc.no/atc", "A10BA02", "metformin"),
     "subject": {"reference": "Patient/p1"},
     "effectivePeriod": {"start": "2023-03-01", "end": "2023-09-01"}},
    {"resourceType": "MedicationAdministration", "id": "m2",
     "medicationCodeableConcept": code("http://www.nlm.nih.gov/research/umls/rxnorm", "860975"),
     "subject": {"reference": "Patient/p1"}, "context": {"reference": "Encounter/e1"},
     "effectiveDateTime": "2023-05-02T10:00:00+08:00"},
    {"resourceType": "MedicationRequest", "id": "m3",
     "medicationCodeableConcept": code("urn:oid:1.2.156.99", "LOCAL-7", "local drug"),
     "subject": {"reference": "Patient/p1"}, "authoredOn": "2023-06-10"},
    {"resourceType": "Procedure", "id": "pr1", "code": code("http://snomed.info/sct", "80146002"),
     "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e2"},
     "performedDateTime": "2023-06-10T11:00:00Z"},
    {"resourceType": "Condition", "id": "c2", "code": {"text": "free text only"},
     "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2023-06-10"},
]


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> tuple[Path, dict]:
    src = tmp_path_factory.mktemp("fhir_src")
    entries = [("urn:uuid:aaaa-p1", PATIENT), ("urn:uuid:aaaa-e1", ENCOUNTER),
               ("urn:uuid:aaaa-c1", CONDITION), ("urn:uuid:aaaa-o1", HBA1C),
               ("urn:uuid:aaaa-o2", BP), ("urn:uuid:aaaa-o3", SMOKER),
               ("urn:uuid:aaaa-cl1", CLAIM)]
    (src / "patient.json").write_text(json.dumps(bundle(*entries)))
    (src / "nested").mkdir()
    (src / "nested" / "export.ndjson").write_text("\n".join(json.dumps(r) for r in NDJSON))
    store = tmp_path_factory.mktemp("fhir_store") / "h.duckdb"
    kept: list[Path] = []
    report, stats = ingest_fhir(store, src, network_key=KEY,
                                keep_identity=lambda p: kept.append(p.read_text()))
    return store, {"report": report, "stats": stats, "identity": kept}


def rows(store: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_every_resource_type_lands_in_its_table(hand) -> None:
    store, info = hand
    assert info["report"].tables == {
        "person": 1, "observation_period": 1, "visit_occurrence": 2,
        "condition_occurrence": 1, "drug_exposure": 3, "procedure_occurrence": 1,
        "measurement": 3, "death": 1, "cost": 1, "concept": 10}  # 8 codes + 2 visit kinds
    assert info["stats"]["skipped"] == {"Observation without a numeric value": 1,
                                        "Condition without subject, code or date": 1}
    assert info["stats"]["files"] == 2 and info["report"].orphans == {}
    pid = stable_id("Patient", "p1")
    assert rows(store, "SELECT person_id, gender_concept_id, year_of_birth, month_of_birth, "
                       "day_of_birth FROM person") == [(pid, 8532, 1960, 4, 2)]
    assert rows(store, "SELECT person_id, CAST(death_date AS VARCHAR) FROM death") == [
        (pid, "2024-02-01")]
    visits = dict(rows(store, "SELECT visit_occurrence_id, visit_concept_id FROM "
                              "visit_occurrence"))
    assert visits == {stable_id("Encounter", "e1"): 9201, stable_id("Encounter", "e2"): 9202}
    # References resolve across forms: urn:uuid in the bundle, Type/id and context in NDJSON.
    assert rows(store, "SELECT visit_occurrence_id FROM condition_occurrence") == [
        (stable_id("Encounter", "e1"),)]
    drugs = dict(rows(store, "SELECT drug_source_value, visit_occurrence_id FROM drug_exposure"))
    assert drugs == {"ATC:A10BA02": None, "RxNorm:860975": stable_id("Encounter", "e1"),
                     "urn:oid:1.2.156.99:LOCAL-7": None}
    assert rows(store, "SELECT cost_event_id, total_charge, cost_domain_id FROM cost") == [
        (stable_id("Encounter", "e1"), 1200.5, "Visit")]
    # The observation period spans every dated record of the person.
    assert rows(store, "SELECT CAST(observation_period_start_date AS VARCHAR), "
                       "CAST(observation_period_end_date AS VARCHAR) FROM observation_period"
                ) == [("2023-03-01", "2024-02-01")]


def test_components_become_measurements_with_values(hand) -> None:
    store, _ = hand
    got = sorted(rows(store, "SELECT c.vocabulary_id, c.concept_code, m.value_as_number "
                             "FROM measurement m JOIN concept c "
                             "ON c.concept_id = m.measurement_concept_id"))
    assert got == [("LOINC", "4548-4", 8.1), ("LOINC", "8462-4", 91.0),
                   ("LOINC", "8480-6", 142.0)]


def test_codes_keep_their_system_and_cohorts_find_them(hand) -> None:
    store, _ = hand
    vocab = {(v, c) for v, c in rows(store, "SELECT vocabulary_id, concept_code FROM concept")}
    assert {("ICD10", "E11.9"), ("ATC", "A10BA02"), ("RxNorm", "860975"), ("SNOMED", "80146002"),
            ("urn:oid:1.2.156.99", "LOCAL-7")} <= vocab
    assert rows(store, "SELECT concept_id FROM concept WHERE concept_code = 'E11.9'") == [
        (concept_id("ICD10", "E11.9"),)]
    cohort = load_cohort({"entry": {"condition": {"codes": ["ICD10:E11%"]}}, "inclusion": [
        {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gt": 7}, "window": [-365, 0]}},
        {"drug": {"codes": ["ATC:A10BA02"], "window": [-365, 0]}}]})
    q = compile_cohort(cohort)
    assert rows(store, f"SELECT person_id FROM ({q.sql})", list(q.params)) == [
        (stable_id("Patient", "p1"),)]


def test_identifiers_are_dropped_and_the_national_id_is_pseudonymised(hand) -> None:
    store, info = hand
    expected = hmac.digest(KEY, b"999-12-3456", "sha256").hex()
    assert rows(store, "SELECT person_source_value FROM person") == [(expected,)]
    assert info["identity"] == [f"person_id,national_id\n{stable_id('Patient', 'p1')},"
                                "999-12-3456\n"]
    text = json.dumps(rows(store, "SELECT * FROM person"), default=str) + json.dumps(
        rows(store, "SELECT * FROM concept"), default=str)
    for secret in ("Li", "Mei", "555-0100", "Secret Road", "Springfield", "999-12-3456"):
        assert secret not in text


def test_without_a_key_there_is_no_pseudonym_and_another_key_gives_another(hand, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "p.json").write_text(json.dumps(PATIENT))  # a lone resource, not a bundle
    ingest_fhir(tmp_path / "a.duckdb", src)
    assert rows(tmp_path / "a.duckdb", "SELECT person_source_value FROM person") == [(None,)]
    ingest_fhir(tmp_path / "b.duckdb", src, network_key=b"another key")
    other = rows(tmp_path / "b.duckdb", "SELECT person_source_value FROM person")[0][0]
    assert other and other != rows(hand[0], "SELECT person_source_value FROM person")[0][0]


def test_bad_input_names_the_file_and_keeps_the_old_store(hand, tmp_path) -> None:
    store = tmp_path / "s.duckdb"
    good = tmp_path / "good"
    good.mkdir()
    (good / "p.json").write_text(json.dumps(PATIENT))
    ingest_fhir(store, good)
    before = store.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.json").write_text(json.dumps(PATIENT))
    (bad / "broken.json").write_text('{"resourceType": "Bundle", ')
    with pytest.raises(IngestError, match="broken.json"):
        ingest_fhir(store, bad)
    (bad / "broken.json").unlink()
    (bad / "lines.ndjson").write_text(json.dumps(ENCOUNTER) + "\nnot json\n")
    with pytest.raises(IngestError, match=r"lines.ndjson, row 2"):
        ingest_fhir(store, bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IngestError, match="no FHIR files"):
        ingest_fhir(store, empty)
    (empty / "enc.json").write_text(json.dumps(ENCOUNTER))
    with pytest.raises(IngestError, match="no Patient"):
        ingest_fhir(store, empty)
    assert store.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("fhir-")]  # temp folder gone


def synthea_truth() -> dict:
    """Counted independently from the JSON files."""
    counts: Counter = Counter()
    persons_with: dict[str, set] = {}
    for path in sorted(SYNTHEA.glob("*.json")):
        doc = json.loads(path.read_text())
        for entry in doc.get("entry", []):
            r = entry["resource"]
            kind = r["resourceType"]
            counts[kind] += 1
            if kind == "Observation":
                values = [r.get("valueQuantity")] + [c.get("valueQuantity")
                                                     for c in r.get("component", [])]
                counts["numeric"] += sum(isinstance(v, dict) and "value" in v for v in values)
            if kind == "Condition":
                for c in r["code"]["coding"]:
                    persons_with.setdefault(c["code"], set()).add(r["subject"]["reference"])
            if kind == "Patient" and r.get("deceasedDateTime"):
                counts["deceased"] += 1
    return {"counts": counts, "persons_with": persons_with}


@pytest.mark.skipif(not SYNTHEA.exists() and not os.environ.get("CI"),
                    reason="shared Synthea FHIR sample not present")
def test_synthea_bundles_match_counts_taken_from_the_json(tmp_path) -> None:
    truth = synthea_truth()
    c = truth["counts"]
    store = tmp_path / "synthea.duckdb"
    report, stats = ingest_fhir(store, SYNTHEA, network_key=KEY)
    assert report.tables["person"] == c["Patient"] == 15
    assert report.tables["visit_occurrence"] == c["Encounter"] == 242  # SOURCE.md's table
    assert report.tables["condition_occurrence"] == c["Condition"] == 96
    assert report.tables["procedure_occurrence"] == c["Procedure"]
    assert report.tables["drug_exposure"] == c["MedicationRequest"]
    assert report.tables["measurement"] == c["numeric"]
    assert report.tables["death"] == c["deceased"] == 1
    assert report.orphans == {} and stats["persons_with_national_id"] == 15
    assert stats["files"] == 17
    sinusitis = len(truth["persons_with"]["444814009"])  # viral sinusitis
    q = compile_cohort(load_cohort({"entry": {"condition": {"codes": ["SNOMED:444814009"]}}}))
    assert rows(store, f"SELECT count(DISTINCT person_id) FROM ({q.sql})",
                list(q.params)) == [(sinusitis,)]
    assert sinusitis >= 5
    # The imported store answers simulated studies directly (sim --site NAME=STORE).
    from healthspace.cdm.store import state_path
    from healthspace.governance.policy import UsagePolicy
    from healthspace.node.state import NodeState
    from healthspace.sim import simulate_dirs

    NodeState.init(state_path(store)).set_policy(UsagePolicy(min_cell_size=5))
    result = simulate_dirs("cohort_count", {"synthea": store}, min_cell_size=5,
                           cohort={"entry": {"condition": {"codes": ["SNOMED:444814009"]}}})
    assert result["sites"] == {"synthea": sinusitis}


def test_cli_ingests_fhir_and_fills_the_identity_vault(hand, tmp_path) -> None:
    key_file = tmp_path / "network.key"
    key_file.write_bytes(KEY + b"\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.json").write_text(json.dumps(bundle(("urn:uuid:aaaa-p1", PATIENT),
                                                  ("urn:uuid:aaaa-e1", ENCOUNTER))))
    store = tmp_path / "cli.duckdb"
    proc = subprocess.run([sys.executable, "-m", "healthspace", "node", "ingest", str(src),
                           "--store", str(store), "--format", "fhir", "--network-key-file",
                           str(key_file), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["tables"]["visit_occurrence"] == 1 and doc["identity_vault_rows"] == 1
    assert doc["fhir"]["resources"] == {"Patient": 1, "Encounter": 1}
    assert rows(store, "SELECT person_source_value FROM person") == [
        (hmac.digest(KEY, b"999-12-3456", "sha256").hex(),)]
    missing = subprocess.run([sys.executable, "-m", "healthspace", "node", "ingest", str(src),
                              "--store", str(store), "--format", "fhir",
                              "--network-key-file", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "network_key_file" in missing.stderr


def test_progress_reports_files_and_resources(tmp_path) -> None:
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "a.json").write_text(json.dumps(bundle(("urn:uuid:aaaa-p1", PATIENT),
                                                  ("urn:uuid:aaaa-e1", ENCOUNTER))))
    (src / "nested" / "b.ndjson").write_text("\n".join(json.dumps(r) for r in NDJSON))
    calls: list[tuple[str, int, int]] = []
    ingest_fhir(tmp_path / "p.duckdb", src, progress=lambda *a: calls.append(a))
    assert [c for c in calls if c[0] == "FHIR files"] == [("FHIR files", 1, 2),
                                                          ("FHIR files", 2, 2)]
    assert [c for c in calls if c[0] == "FHIR resources"][-1] == (
        "FHIR resources", 2 + len(NDJSON), 2 + len(NDJSON))
