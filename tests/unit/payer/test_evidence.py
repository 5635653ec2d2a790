"""The evidence check: rule files, a hospital's answers on hand-built records, the protocol
over the synthetic network against an independent SQL reference, and what the hub sees."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest

from healthspace.analyses.base import Final
from healthspace.analyses.execute import run_local
from healthspace.analyses.registry import get
from healthspace.cdm.store import create_schema
from healthspace.core.errors import InvalidInput
from healthspace.payer.evidence import check_claims, claims_to_check, load_evidence_rules
from healthspace.privacy.sealed import BoxKey, seal
from healthspace.sim import _linkage, load_site, simulate

ADMIT = date(2024, 3, 10)
DISCHARGE = date(2024, 3, 15)


def _hospital() -> duckdb.DuckDBPyConnection:
    """Five inpatients with the same stay and different records around it."""
    con = duckdb.connect()
    create_schema(con)
    people = {1: "ckd_lab", 2: "ckd_high", 3: "ckd_old", 4: "hf_drug", 5: "hf_stay_only"}
    for pid, psv in people.items():
        con.execute("INSERT INTO person (person_id, gender_concept_id, year_of_birth, "
                    "person_source_value) VALUES (?, 8507, 1950, ?)", [pid, psv])
        con.execute("INSERT INTO visit_occurrence (visit_occurrence_id, person_id, "
                    "visit_concept_id, visit_start_date, visit_end_date, "
                    "visit_type_concept_id) VALUES (?, ?, 9201, ?, ?, 32817)",
                    [pid, pid, ADMIT, DISCHARGE])

    def lab(mid: int, pid: int, day: date, value: float) -> None:
        con.execute("INSERT INTO measurement (measurement_id, person_id, "
                    "measurement_concept_id, measurement_date, measurement_type_concept_id, "
                    "value_as_number, measurement_source_value) "
                    "VALUES (?, ?, 3049187, ?, 32817, ?, '33914-3')", [mid, pid, day, value])

    lab(1, 1, ADMIT - timedelta(days=30), 12.0)   # eGFR < 15 within 90 days: supported
    lab(2, 2, ADMIT + timedelta(days=1), 40.0)    # eGFR 40: unsupported
    lab(3, 3, ADMIT - timedelta(days=120), 9.0)   # too long before: unsupported
    con.execute("INSERT INTO drug_exposure (drug_exposure_id, person_id, drug_concept_id, "
                "drug_exposure_start_date, drug_type_concept_id, drug_source_value) "
                "VALUES (1, 4, 956874, ?, 32817, 'C03CA01')", [ADMIT - timedelta(days=200)])
    con.execute("INSERT INTO condition_occurrence (condition_occurrence_id, person_id, "
                "condition_concept_id, condition_start_date, condition_type_concept_id, "
                "condition_source_value) VALUES (1, 5, 316139, ?, 32817, 'I50.9')",
                [ADMIT + timedelta(days=1)])  # only during the stay: not before admission
    return con


def _query(q: int, psv: str, codes: list[str], admitted: date = ADMIT,
           discharged: date = DISCHARGE) -> dict:
    return {"q": q, "psv": psv, "admitted": admitted.isoformat(),
            "discharged": discharged.isoformat(), "codes": codes}


def test_a_hospital_answers_each_code_from_its_own_record():
    con = _hospital()
    queries = [
        _query(0, "ckd_lab", ["N18.5"]), _query(1, "ckd_high", ["N18.5"]),
        _query(2, "ckd_old", ["N18.5"]), _query(3, "hf_drug", ["I50.0"]),
        _query(4, "hf_stay_only", ["I50.0"]), _query(5, "nobody", ["N18.5"]),
        _query(6, "ckd_lab", ["N18.5"], discharged=DISCHARGE + timedelta(days=1)),
        _query(7, "hf_drug", ["I50.0", "A41.9"]),
    ]
    answers, matched = check_claims(con, queries, load_evidence_rules())
    got = {a["q"]: a["answers"] for a in answers}
    assert got == {
        0: {"N18.5": "supported"}, 1: {"N18.5": "unsupported"}, 2: {"N18.5": "unsupported"},
        3: {"I50.0": "supported"}, 4: {"I50.0": "unsupported"}, 5: {"N18.5": "no_record"},
        6: {"N18.5": "no_record"}, 7: {"I50.0": "supported", "A41.9": "unsupported"},
    }
    assert matched == 6  # queries 0-4 and 7 found a visit (query 7 is person 4 again)
    # a person outside the study's consent is not looked at
    withheld, _ = check_claims(con, queries[:1], load_evidence_rules(),
                               "SELECT person_id FROM person WHERE person_id <> 1")
    assert withheld[0]["answers"] == {"N18.5": "no_record"}


@pytest.mark.parametrize(("rules", "field"), [
    ({"name": "x", "version": "1", "rules": [{"title": "t", "codes": ["N18.5"], "any_of": [
        {"condition": ["I50"], "drug": ["C03C%"]}]}]}, "evidence_rules.rules[0].any_of[0]"),
    ({"name": "x", "version": "1", "rules": [{"title": "t", "codes": ["N18.5"], "any_of": [
        {"measurement": "33914-3"}]}]}, "evidence_rules.rules[0].any_of[0]"),
    ({"name": "x", "version": "1", "rules": [{"title": "t", "codes": ["not a code!"],
                                               "any_of": [{"drug": ["C03C%"]}]}]},
     "evidence_rules.rules[0].codes"),
    ({"name": "x", "version": "1", "rules": []}, "evidence_rules.rules"),
])
def test_bad_rule_files_name_the_field(rules, field):
    with pytest.raises(InvalidInput) as bad:
        load_evidence_rules(rules)
    assert bad.value.field == field


def test_malformed_queries_are_refused_naming_the_field():
    con = _hospital()
    with pytest.raises(InvalidInput) as bad:
        check_claims(con, [{"q": 0, "psv": "ckd_lab", "admitted": "10/03/2024",
                            "discharged": "2024-03-15", "codes": ["N18.5"]}],
                     load_evidence_rules())
    assert bad.value.field == "queries[0].admitted"
    with pytest.raises(InvalidInput) as bad:
        check_claims(con, [{"q": 0, "psv": "ckd_lab", "admitted": "2024-03-10",
                            "discharged": "2024-03-15", "codes": []}], load_evidence_rules())
    assert bad.value.field == "queries[0].codes"


# --- over the synthetic network -----------------------------------------------------------

NODES = ["payer", "hospital_1", "hospital_2", "hospital_3"]


@pytest.fixture(scope="module")
def network(synth_dir):
    sites = {name: load_site(synth_dir / name) for name in NODES}
    yield sites
    for site in sites.values():
        site.con.close()


def _reference(synth_dir) -> pd.DataFrame:
    """Claim-level answers from plain SQL over the CSV folders, written from the rules'
    text: CKD 5 needs an eGFR < 15 from 90 days before admission to discharge; heart
    failure an I50 diagnosis or a C03C drug in the 730 days before admission."""
    con = duckdb.connect()
    for name in NODES:
        for table in ("person", "visit_occurrence", "condition_occurrence", "measurement",
                      "drug_exposure", "care_site"):
            path = synth_dir / name / f"{table}.csv"
            if path.exists():
                con.execute(f"CREATE VIEW {name}_{table} AS SELECT * FROM "
                            f"read_csv_auto('{path}', header=true)")
    hospitals = [n for n in NODES if n != "payer"]
    union = " UNION ALL ".join(
        f"SELECT '{h}' AS site, p.person_source_value AS psv, v.visit_start_date AS a, "
        f"v.visit_end_date AS d, p.person_id FROM {h}_visit_occurrence v "
        f"JOIN {h}_person p USING (person_id)" for h in hospitals)
    evidence = " UNION ALL ".join(
        f"SELECT '{h}' AS site, person_id, 'lab' AS kind, measurement_date AS day, "
        f"measurement_source_value AS code, value_as_number AS value FROM {h}_measurement "
        f"UNION ALL SELECT '{h}', person_id, 'dx', condition_start_date, "
        f"condition_source_value, NULL FROM {h}_condition_occurrence "
        f"UNION ALL SELECT '{h}', person_id, 'drug', drug_exposure_start_date, "
        f"drug_source_value, NULL FROM {h}_drug_exposure" for h in hospitals)
    return con.execute(f"""
        WITH claims AS (
          SELECT v.visit_occurrence_id AS visit_id, p.person_source_value AS psv,
                 v.visit_start_date AS a, v.visit_end_date AS d, cs.care_site_source_value AS site,
                 c.condition_source_value AS code
          FROM payer_visit_occurrence v
          JOIN payer_person p USING (person_id)
          JOIN payer_care_site cs ON cs.care_site_id = v.care_site_id
          JOIN payer_condition_occurrence c ON c.visit_occurrence_id = v.visit_occurrence_id
          WHERE v.visit_concept_id = 9201 AND c.condition_status_source_value = 'secondary'
            AND (c.condition_source_value = 'N18.5' OR c.condition_source_value LIKE 'I50%')),
        found AS (
          SELECT c.*, h.person_id FROM claims c
          LEFT JOIN ({union}) h ON h.site = c.site AND h.psv = c.psv AND h.a = c.a
                                AND h.d = c.d),
        judged AS (
          SELECT visit_id, site, code, CASE
            WHEN person_id IS NULL THEN 'no_record'
            WHEN code = 'N18.5' AND EXISTS (SELECT 1 FROM ({evidence}) e WHERE e.site = f.site
                 AND e.person_id = f.person_id AND e.kind = 'lab' AND e.code = '33914-3'
                 AND e.value < 15 AND e.day BETWEEN f.a - INTERVAL 90 DAY AND f.d)
              THEN 'supported'
            WHEN code LIKE 'I50%' AND EXISTS (SELECT 1 FROM ({evidence}) e
                 WHERE e.site = f.site AND e.person_id = f.person_id
                 AND ((e.kind = 'dx' AND e.code LIKE 'I50%')
                      OR (e.kind = 'drug' AND e.code LIKE 'C03C%'))
                 AND e.day BETWEEN f.a - INTERVAL 730 DAY AND f.a - INTERVAL 1 DAY)
              THEN 'supported'
            ELSE 'unsupported' END AS finding
          FROM found f)
        SELECT visit_id, site, code, finding FROM judged ORDER BY visit_id, code""").df()


def test_the_evidence_check_equals_an_independent_sql_reference(network, synth_dir):
    result = simulate("evidence_check", network, params={"payer": "payer"})
    kept = pd.DataFrame(network["payer"].findings["evidence_check"])
    reference = _reference(synth_dir)
    # every early readmission the screen flags in this (untampered) network is a stay the
    # hospital recorded
    stays = kept[kept["code"] == "stay"]
    assert len(stays) > 0 and set(stays["finding"]) == {"supported"}
    ours = kept.loc[kept["code"] != "stay", ["visit_id", "hospital", "code", "finding"]
                    ].sort_values(
        ["visit_id", "code"]).reset_index(drop=True)
    ref = reference.rename(columns={"site": "hospital"}).reset_index(drop=True)
    assert len(ours) > 50
    pd.testing.assert_frame_equal(ours, ref, check_dtype=False)
    # released counts are claim-level and suppressed under k
    per_claim = kept.groupby(["hospital", "visit_id"])["finding"].agg(
        lambda s: "no_record" if "no_record" in set(s) else
        "unsupported" if "unsupported" in set(s) else "supported")
    for row in result["hospitals"]:
        counts = per_claim.loc[row["hospital"]].value_counts()
        for answer, n in (("claims", int(counts.sum())),
                          *((a, int(counts.get(a, 0)))
                            for a in ("supported", "unsupported", "no_record"))):
            assert row[answer] == (None if 0 < n < result["k"] else n)


def _drive(sites, params):
    """The four rounds as the hub runs them, recording everything the hub sees."""
    impl = get("evidence_check")
    parsed = impl.parse_params(params)
    secret = os.urandom(32)
    seen: list[str] = []
    state: dict = {}
    round_input = None
    for round_no in range(1, 5):
        partials = {
            name: run_local(site.con, site=name, analysis="evidence_check", params=params,
                            cohort=None, round_input=round_input,
                            linkage=_linkage(site, secret, name),
                            findings_sink=site.findings.__setitem__).partial
            for name, site in sites.items()}
        seen.append(json.dumps(partials))
        outcome = impl.combine(partials, parsed, state, round_no)
        if isinstance(outcome, Final):
            seen.append(json.dumps(outcome.result))
            return outcome.result, seen, secret
        seen.append(json.dumps(outcome.round_input))
        state, round_input = outcome.state, outcome.round_input
    raise AssertionError("did not finish")


def test_the_hub_and_other_hospitals_see_nothing_but_sealed_messages(network):
    result, seen, secret = _drive(network, {"payer": "payer"})
    claims = pd.DataFrame(network["payer"].findings["evidence_check"])
    hub_view = "\n".join(seen)
    psvs = network["payer"].con.execute(
        "SELECT person_source_value FROM person WHERE person_id IN "
        f"({','.join(str(p) for p in claims['person_id'].unique())})").fetchall()
    assert psvs and not any(psv in hub_view for (psv,) in psvs)
    for day in claims["admitted"].unique()[:50]:
        assert str(day) not in hub_view
    # codes never travel in clear ('.' is not a base64 character; a quoted "I50 would be a
    # JSON string of its own)
    assert "N18.5" not in hub_view and '"I50' not in hub_view
    # the consumer's result holds counts only
    assert set(result) >= {"hospitals", "rules", "claims_checked"}
    assert "visit_id" not in json.dumps(result) and "person_id" not in json.dumps(result)
    # a hospital cannot open another hospital's queries; its own open with its own key
    impl = get("evidence_check")
    parsed = impl.parse_params({"payer": "payer"})
    own_box = json.loads(seen[3])["boxes"]
    key_2 = BoxKey.from_secret(_linkage(network["hospital_2"], secret, "hospital_2")
                               .study_secret("evidence/box"))
    with pytest.raises(InvalidInput):
        key_2.open(own_box["hospital_1"], "boxes")
    assert isinstance(key_2.open(own_box["hospital_2"], "boxes")["queries"], list)
    assert parsed.payer == "payer"


def test_sealed_messages_are_padded_and_bound_to_their_recipient():
    alice = BoxKey.from_secret(os.urandom(32))
    bob = BoxKey.from_secret(os.urandom(32))
    short = seal(alice.private.public_key, {"queries": []})
    longer = seal(alice.private.public_key, {"queries": [{"q": i} for i in range(50)]})
    assert len(short) == len(longer)  # both within one 4 KiB size class
    assert alice.open(longer, "x") == {"queries": [{"q": i} for i in range(50)]}
    with pytest.raises(InvalidInput) as wrong:
        bob.open(short, "round_input.boxes")
    assert wrong.value.field == "round_input.boxes"
    with pytest.raises(InvalidInput):
        alice.open("not base64!", "x")


def test_study_nodes_must_include_the_payer():
    impl = get("evidence_check")
    with pytest.raises(InvalidInput) as bad:
        impl.check_nodes(impl.parse_params({"payer": "payer"}), ["hospital_1", "hospital_2"])
    assert bad.value.field == "params.payer"
    with pytest.raises(InvalidInput) as bad:
        impl.check_nodes(impl.parse_params({"payer": "payer"}), ["payer"])
    assert bad.value.field == "nodes"


def test_claims_to_check_picks_covered_secondary_codes_only():
    cases = pd.DataFrame([
        {"visit_id": 1, "person_id": 1, "hospital": "h", "admitted": ADMIT,
         "discharged": DISCHARGE, "secondary": ("I10", "N18.5")},
        {"visit_id": 2, "person_id": 2, "hospital": "h", "admitted": ADMIT,
         "discharged": DISCHARGE, "secondary": ("I10",)},
        {"visit_id": 3, "person_id": 3, "hospital": "h", "admitted": ADMIT,
         "discharged": DISCHARGE, "secondary": ("I50.0", "A41.9")},
    ])
    picked = claims_to_check(cases, load_evidence_rules())
    assert list(zip(picked["visit_id"], picked["code"], strict=True)) == [
        (1, "N18.5"), (3, "I50.0"), (3, "A41.9")]
