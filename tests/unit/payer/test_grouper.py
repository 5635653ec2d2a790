"""The DRG/DIP grouper on hand-built cases, the rule-file checks, and case extraction."""

from __future__ import annotations

import pytest

from healthspace.core.errors import InvalidInput
from healthspace.payer.grouper import Case, group
from healthspace.payer.rules import SAMPLE, CodeSet, load_rules
from healthspace.sim import load_site

RULES = load_rules()


@pytest.mark.parametrize(("patterns", "code", "expected"), [
    (["I50.9"], "I50.9", True), (["I50.9"], "I50.0", False),
    (["I50"], "I50.0", True), (["I50"], "I5", False),
    (["027%"], "027034Z", True), (["027%"], "0270", True), (["027%"], "02H", False),
    (["J00-J99"], "J18.9", True), (["J00-J99"], "K92.2", False), (["J12-J18"], "J18.1", True),
    (["J12-J18"], "J11.0", False), ([], "I10", False), (["I10"], None, False),
])
def test_code_patterns(patterns, code, expected):
    assert CodeSet(patterns).matches(code) is expected


@pytest.mark.parametrize(("case", "drg", "severity", "dip"), [
    # medical ADRG, severity from the secondary diagnoses
    (Case("I50.9", ("N18.5", "I10")), "FR31", "mcc", "I50.9:conservative"),
    (Case("I50.9", ("N18.3",)), "FR33", "cc", "I50.9:conservative"),
    (Case("I50.9", ("I10", "E11.9")), "FR35", "none", "I50.9:conservative"),
    # a secondary diagnosis of the principal's own category does not count
    (Case("I50.0", ("I50.9",)), "FR35", "none", "I50.0:conservative"),
    # procedure ADRGs come first: PCI, lung resection, chemotherapy, endoscopy
    (Case("I21.4", ("E11.21",), ("027034Z", "BW03ZZZ")), "FM13", "cc", "I21.4:027034Z"),
    (Case("I21.4", (), ("BW03ZZZ",)), "FR15", "none", "I21.4:conservative"),
    (Case("C34.1", (), ("0BTC4ZZ",)), "EB15", "none", "C34.1:0BTC4ZZ"),
    (Case("C34.1", ("N18.5",), ("3E03305",)), "ER11", "mcc", "C34.1:3E03305"),
    (Case("C34.1", ()), "ER25", "none", "C34.1:conservative"),
    (Case("K92.2", (), ("0DJ08ZZ",)), "GK15", "none", "K92.2:0DJ08ZZ"),
    (Case("K92.2", ("J18.9",)), "GS13", "cc", "K92.2:conservative"),
    # an unsplit ADRG, an MDC without a matching ADRG, a diagnosis in no MDC, no diagnosis
    (Case("E11.9", ("N18.5",)), "KS19", "unsplit", "E11.9:conservative"),
    (Case("Z00.0"), "QY", "ungroupable", "Z00.0:conservative"),
    (Case(None), "QY", "ungroupable", "QY"),
])
def test_grouping_paths(case, drg, severity, dip):
    got = group(RULES, case)
    assert (got.drg, got.severity, got.dip) == (drg, severity, dip)
    if drg != "QY":
        assert got.adrg == drg[:-1] and got.mdc is not None


def test_the_sample_is_labelled_and_lists_every_drg():
    assert RULES.official is False and "sample" in SAMPLE.read_text().lower()
    codes = RULES.drg_codes()
    assert codes[-1] == "QY" and len(codes) == len(set(codes))
    assert "KS19" in codes and "KS15" not in codes and {"FR31", "FR33", "FR35"} <= set(codes)


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: r["adrg"][0].update(mdc="MDCX"), "rules.adrg"),
    (lambda r: r["mdc"][0].update(diagnoses=["I50-"]), "rules.mdc[0].diagnoses"),
    (lambda r: r["adrg"][0].update(procedures=[]), "rules.adrg"),
    (lambda r: r.update(unknown=1), "rules.unknown"),
])
def test_bad_rule_files_name_the_field(change, field):
    raw = RULES.model_dump(mode="json")
    change(raw)
    with pytest.raises(InvalidInput) as info:
        load_rules(raw)
    assert info.value.field == field


def test_cases_are_the_inpatient_visits_with_their_codes(synth_dir):
    """Against independent SQL over the same CSV folder."""
    from healthspace.payer.cases import grouped_cases

    site = load_site(synth_dir / "hospital_1")
    try:
        frame = grouped_cases(site.con, RULES)
        con = site.con
        visits = con.execute("SELECT visit_occurrence_id FROM visit_occurrence "
                             "WHERE visit_concept_id = 9201 ORDER BY 1").fetchall()
        assert frame["visit_id"].tolist() == [v[0] for v in visits]
        principal = dict(con.execute(
            "SELECT visit_occurrence_id, condition_source_value FROM condition_occurrence "
            "WHERE condition_status_source_value = 'principal'").fetchall())
        assert all(principal.get(v) == p for v, p in zip(frame["visit_id"], frame["principal"],
                                                         strict=True))
        charges = dict(con.execute("SELECT cost_event_id, sum(total_charge) FROM cost "
                                   "WHERE cost_domain_id = 'Visit' GROUP BY 1").fetchall())
        assert all(abs(charges[v] - c) < 1e-6 for v, c in zip(frame["visit_id"], frame["cost"],
                                                             strict=True))
        procs = {}
        for v, code in con.execute("SELECT visit_occurrence_id, procedure_source_value "
                                   "FROM procedure_occurrence").fetchall():
            procs.setdefault(v, set()).add(code)
        assert all(set(p) == procs.get(v, set()) for v, p in zip(frame["visit_id"],
                                                                 frame["procedures"],
                                                                 strict=True))
        assert (frame["drg"] != "QY").mean() > 0.95  # the sample covers the synthetic data
        regrouped = [group(RULES, Case(p, s, x)).drg for p, s, x in
                     zip(frame["principal"], frame["secondary"], frame["procedures"],
                         strict=True)]
        assert regrouped == frame["drg"].tolist()
    finally:
        site.con.close()


def test_the_payer_groups_each_hospitals_claims_as_the_hospital_does(synth_dir):
    """The bureau's settlement view of hospital k (care_site k) holds the insured persons'
    stays there with the same codes and procedures, so both sides give the same DRGs."""
    from collections import Counter

    from healthspace.payer.cases import grouped_cases

    payer = load_site(synth_dir / "payer")
    try:
        claims = grouped_cases(payer.con, RULES)
        site_of = dict(payer.con.execute("SELECT visit_occurrence_id, care_site_id "
                                         "FROM visit_occurrence").fetchall())
        insured = {row[0] for row in payer.con.execute(
            "SELECT person_source_value FROM person").fetchall()}
    finally:
        payer.con.close()
    assert (claims["drg"] != "QY").mean() > 0.95
    assert claims["procedures"].map(len).sum() > 0  # billed procedures reach the payer
    for k in (1, 2, 3):
        hospital = load_site(synth_dir / f"hospital_{k}")
        try:
            cases = grouped_cases(hospital.con, RULES)
            pseudonym = dict(hospital.con.execute(
                "SELECT person_id, person_source_value FROM person").fetchall())
        finally:
            hospital.con.close()
        own = cases[cases["person_id"].map(pseudonym).isin(insured)]
        billed = claims[claims["visit_id"].map(site_of) == k]
        assert Counter(billed["drg"]) == Counter(own["drg"])
        assert Counter(billed["dip"]) == Counter(own["dip"])
