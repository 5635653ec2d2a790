"""Tests for the synthetic OMOP network: layout, determinism, identity, vocabulary, effects."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from healthspace.cdm import schema
from healthspace.cdm.synth import DEMO_NETWORK_KEY, SynthSummary, generate, national_ids, pseudonym

SITE_FILES = {
    "person", "observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
    "measurement", "procedure_occurrence", "death", "cost", "concept", "care_site", "identity",
}
PAYER_FILES = {
    "person", "visit_occurrence", "condition_occurrence", "drug_exposure",
    "procedure_occurrence", "cost", "payer_plan_period", "concept", "care_site", "identity",
}
VOCAB_OF = {
    ("condition_occurrence", "condition"): "ICD10",
    ("drug_exposure", "drug"): "ATC",
    ("measurement", "measurement"): "LOINC",
    ("procedure_occurrence", "procedure"): "ICD10PCS",
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """Two hospitals of 10,000 persons each plus the payer: 20k person records in all."""
    return generate(tmp_path_factory.mktemp("net"), sites=2, persons=10_000, seed=7, payer=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("small"), sites=3, persons=400, seed=3, payer=True)


@functools.cache
def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype_backend="numpy_nullable", keep_default_na=True)


def read(out: Path, folder: str, table: str) -> pd.DataFrame:
    return _read(out / folder / f"{table}.csv")


def days(series: pd.Series) -> np.ndarray:
    """ISO dates as days since 1970-01-01."""
    return pd.to_datetime(series).to_numpy().astype("datetime64[D]").astype(np.int64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.csv"))} | {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))
    }


# --- layout, determinism, arguments ----------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict[str, bytes]:
        return _files(generate(tmp_path / name, sites=2, persons=300, seed=seed, payer=True).out)

    a, b, c = run("a", 11), run("b", 11), run("c", 12)
    assert a.keys() == b.keys() == c.keys()
    assert a == b
    assert a["hospital_1/person.csv"] != c["hospital_1/person.csv"]
    assert a["hospital_1/visit_occurrence.csv"] != c["hospital_1/visit_occurrence.csv"]


def test_layout_sites_payer_and_truth_outside_site_folders(small: SynthSummary) -> None:
    out = small.out
    assert small.sites == ["hospital_1", "hospital_2", "hospital_3"]
    assert {p.name for p in out.iterdir()} == {*small.sites, "payer", "_truth"}
    for site in small.sites:
        assert {p.stem for p in (out / site).iterdir()} == SITE_FILES
    assert {p.stem for p in (out / "payer").iterdir()} == PAYER_FILES  # no labs at the payer
    assert [p.name for p in (out / "_truth").iterdir()] == ["truth.json"]
    assert not any("truth" in p.name for s in small.sites for p in (out / s).iterdir())


def test_without_payer_there_is_no_payer_folder_even_over_an_old_run(tmp_path: Path) -> None:
    generate(tmp_path, sites=3, persons=50, seed=1, payer=True)
    summary = generate(tmp_path, sites=2, persons=50, seed=1)
    assert {p.name for p in tmp_path.iterdir()} == {"hospital_1", "hospital_2", "_truth"}
    assert "payer" not in summary.rows
    assert json.loads((tmp_path / "_truth" / "truth.json").read_text())["payer"] is None


def test_progress_reports_all_persons(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    generate(tmp_path, sites=2, persons=100, progress=lambda *a: calls.append(a))
    persons = [c for c in calls if c[0] == "persons"]
    assert persons[0][1] == 0 and persons[-1][1] == persons[-1][2] == 190  # 2 x (100 - 5)


@pytest.mark.parametrize("kw", [{"sites": 0}, {"persons": 0}, {"seed": -1}])
def test_rejects_bad_arguments(tmp_path: Path, kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, **kw)


# --- schema and counts ------------------------------------------------------------------------


def test_every_csv_header_is_the_schema(small: SynthSummary) -> None:
    for folder in [*small.sites, "payer"]:
        for path in (small.out / folder).glob("*.csv"):
            header = path.read_text().splitlines()[0].split(",")
            expected = (["person_id", "national_id"] if path.stem == "identity"
                        else schema.column_names(path.stem))
            assert header == expected, path


def test_summary_counts_match_files(small: SynthSummary) -> None:
    for folder, tables in small.rows.items():
        for table, n in tables.items():
            lines = (small.out / folder / f"{table}.csv").read_text().count("\n")
            assert lines - 1 == n, (folder, table)
        if folder != "payer":
            assert tables["person"] == tables["identity"] == 400


# --- identity ---------------------------------------------------------------------------------


def test_pseudonym_is_hmac_sha256_of_the_national_id() -> None:
    expected = hmac.new(DEMO_NETWORK_KEY, b"11010519491231002X", hashlib.sha256)
    assert pseudonym(["11010519491231002X"]) == [expected.hexdigest()]
    assert pseudonym(np.array(["1", "2"]), key=b"k")[1] == hmac.new(
        b"k", b"2", hashlib.sha256).hexdigest()


def _valid_resident_id(nid: str) -> bool:
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(nid[:17], weights, strict=True))
    return len(nid) == 18 and nid[:17].isdigit() and "10X98765432"[total % 11] == nid[17]


def test_national_ids_are_valid_unique_and_encode_birth_and_sex() -> None:
    assert _valid_resident_id("11010519491231002X")  # the GB 11643 worked example
    g = np.arange(0, 3_000_000, 997)
    birth = np.full(len(g), (np.datetime64("1949-12-31") - np.datetime64("1970-01-01")).astype(int))
    male = g % 2 == 0
    ids = national_ids(g, birth, male)
    assert len(set(ids)) == len(ids)
    assert all(_valid_resident_id(i) and i[6:14] == "19491231" for i in ids)
    assert all((int(i[16]) % 2 == 1) == m for i, m in zip(ids, male, strict=True))


def test_site_ids_are_local_and_shared_persons_carry_the_same_pseudonym(net: SynthSummary) -> None:
    out, (s1, s2) = net.out, net.sites
    people = {}
    for site in net.sites:
        person = read(out, site, "person").merge(read(out, site, "identity"), on="person_id")
        assert len(person) == 10_000
        assert (person.person_source_value == pseudonym(person.national_id)).all()
        nid = person.national_id.astype(str)
        assert nid.str.len().eq(18).all()
        assert (nid.str[6:10].astype(int) == person.year_of_birth).all()
        people[site] = person
    assert set(people[s1].person_id).isdisjoint(people[s2].person_id)
    both = people[s1].merge(people[s2], on="person_source_value", suffixes=("_1", "_2"))
    for site in net.sites:
        assert 0.05 <= len(both) / len(people[site]) <= 0.15
    assert (both.national_id_1 == both.national_id_2).all()
    assert (both.year_of_birth_1 == both.year_of_birth_2).all()
    assert (both.gender_concept_id_1 == both.gender_concept_id_2).all()
    # Each site holds its own visits of a shared person: both sites have some.
    for site, col in ((s1, "person_id_1"), (s2, "person_id_2")):
        visits = read(out, site, "visit_occurrence")
        assert set(both[col]) <= set(visits.person_id)


# --- vocabulary -------------------------------------------------------------------------------


def test_every_concept_id_in_the_data_is_in_concept_csv(net: SynthSummary) -> None:
    for folder in [*net.sites, "payer"]:
        concepts = read(net.out, folder, "concept")
        known = set(concepts.concept_id)
        for path in (net.out / folder).glob("*.csv"):
            if path.stem in ("concept", "identity"):
                continue
            data = read(net.out, folder, path.stem)
            for col in data.columns:
                if col.endswith("_concept_id"):
                    used = set(data[col].dropna())
                    assert used <= known, (folder, path.stem, col, sorted(used - known)[:5])


def test_source_codes_map_to_their_vocabulary_with_ids_stable_across_sites(
    net: SynthSummary,
) -> None:
    concept_files = {(net.out / s / "concept.csv").read_bytes() for s in net.sites}
    assert len(concept_files) == 1  # same code, same concept_id at every site
    for folder in [*net.sites, "payer"]:
        concepts = read(net.out, folder, "concept").set_index("concept_id")
        assert set(concepts.loc[[9201, 9202, 9203], "concept_code"]) == {"IP", "OP", "ER"}
        assert set(concepts.loc[[8532, 8507], "vocabulary_id"]) == {"Gender"}
        assert (concepts.standard_concept == "S").all()
        for (table, prefix), vocab in VOCAB_OF.items():
            if not (net.out / folder / f"{table}.csv").exists():
                continue
            rows = read(net.out, folder, table)
            assert (rows[f"{prefix}_concept_id"] == rows[f"{prefix}_source_concept_id"]).all()
            meta = concepts.loc[rows[f"{prefix}_concept_id"]]
            assert (meta.vocabulary_id == vocab).all(), (folder, table)
            assert (meta.concept_code.to_numpy() == rows[f"{prefix}_source_value"].to_numpy()).all()
        visits = read(net.out, folder, "visit_occurrence")
        assert set(visits.visit_concept_id) == {9201, 9202, 9203}


# --- costs and the payer view -----------------------------------------------------------------


def test_costs_add_up_and_cover_every_visit(net: SynthSummary) -> None:
    for folder in [*net.sites, "payer"]:
        cost, visits = read(net.out, folder, "cost"), read(net.out, folder, "visit_occurrence")
        assert (cost.cost_domain_id == "Visit").all()
        assert sorted(cost.cost_event_id) == sorted(visits.visit_occurrence_id)
        assert (cost.total_charge > 0).all() and (cost.paid_by_payer >= 0).all()
        gap = cost.paid_by_payer + cost.paid_by_patient - cost.total_charge
        assert gap.abs().max() < 0.005


def test_payer_sees_every_hospital_visit_of_insured_persons(net: SynthSummary) -> None:
    out = net.out
    payer_people = read(out, "payer", "person")
    hospital_people = pd.concat([read(out, s, "person") for s in net.sites])
    unique = hospital_people.person_source_value.nunique()
    assert 0.85 <= len(payer_people) / unique <= 0.95
    insured = set(payer_people.person_source_value)
    total, visits = 0.0, 0
    for site in net.sites:
        v = read(out, site, "visit_occurrence").merge(
            read(out, site, "person")[["person_id", "person_source_value"]], on="person_id")
        v = v[v.person_source_value.isin(insured)]
        visits += len(v)
        cost = read(out, site, "cost")
        total += cost[cost.cost_event_id.isin(v.visit_occurrence_id)].total_charge.sum()
    payer_cost = read(out, "payer", "cost")
    assert len(read(out, "payer", "visit_occurrence")) == visits
    assert payer_cost.total_charge.sum() == pytest.approx(total, rel=1e-9)
    assert set(read(out, "payer", "visit_occurrence").care_site_id) == {1, 2}
    assert set(read(out, "payer", "care_site").care_site_id) == {1, 2}


def test_payer_has_claims_not_clinical_detail(net: SynthSummary) -> None:
    out = net.out
    assert not (out / "payer" / "measurement.csv").exists()
    assert "LOINC" not in set(read(out, "payer", "concept").vocabulary_id)
    drugs = read(out, "payer", "drug_exposure")
    assert drugs.sig.isna().all() and drugs.stop_reason.isna().all()
    cost = read(out, "payer", "cost").merge(
        read(out, "payer", "visit_occurrence"), left_on="cost_event_id",
        right_on="visit_occurrence_id")
    inpatient = cost.visit_concept_id == 9201
    assert cost.drg_source_value[inpatient].notna().all()
    assert cost.drg_source_value[~inpatient].isna().all()
    assert cost.payer_plan_period_id.notna().all()
    plans = read(out, "payer", "payer_plan_period")
    assert set(plans.plan_source_value) == {"UEBMI", "URRBMI"}


# --- realism and built-in effects -------------------------------------------------------------


def _prevalence(out: Path, site: str, prefix: str) -> float:
    cond = read(out, site, "condition_occurrence")
    hit = cond[cond.condition_source_value.str.startswith(prefix)].person_id.nunique()
    return hit / len(read(out, site, "person"))


def test_tertiary_centre_is_sicker_and_costlier(net: SynthSummary) -> None:
    out, (s1, s2) = net.out, net.sites
    for prefix in ("E11", "I50", "N18"):
        assert _prevalence(out, s1, prefix) > 1.2 * _prevalence(out, s2, prefix), prefix
    ip = [(read(out, s, "visit_occurrence").visit_concept_id == 9201).sum() for s in (s1, s2)]
    assert ip[0] > 1.3 * ip[1]
    per_visit = [read(out, s, "cost").total_charge.mean() for s in (s1, s2)]
    assert per_visit[0] > per_visit[1]


def test_demographics_and_observation_windows_are_plausible(net: SynthSummary) -> None:
    for site in net.sites:
        person = read(net.out, site, "person")
        assert person.year_of_birth.between(1930, 2005).all()
        assert 45 <= (2025 - person.year_of_birth).mean() <= 65
        obs = read(net.out, site, "observation_period")
        start, end = days(obs.observation_period_start_date), days(obs.observation_period_end_date)
        assert (start <= end).all()
        assert (pd.to_datetime(obs.observation_period_end_date).dt.year >= 2024).mean() > 0.6
        visits = read(net.out, site, "visit_occurrence").merge(obs, on="person_id")
        v_start = days(visits.visit_start_date)
        assert (v_start >= days(visits.observation_period_start_date)).all()
        assert (v_start <= days(visits.observation_period_end_date)).all()
        los = days(visits.visit_end_date) - v_start
        inpatient = (visits.visit_concept_id == 9201).to_numpy()
        assert los[inpatient].max() <= 30
        # Stays last at least a day unless the person entered and left on the same day.
        one_day = days(visits.observation_period_end_date) == days(visits.visit_start_date)
        assert (los[inpatient & ~one_day] >= 1).all()
        assert (los[~inpatient] == 0).all()


def test_hba1c_is_higher_in_diabetics(net: SynthSummary) -> None:
    site = net.sites[1]
    cond, lab = read(net.out, site, "condition_occurrence"), read(net.out, site, "measurement")
    diabetic = set(cond[cond.condition_source_value.str.match(r"E11|R73")].person_id)
    a1c = lab[lab.measurement_source_value == "4548-4"]
    dm = a1c[a1c.person_id.isin(diabetic)].value_as_number
    other = a1c[~a1c.person_id.isin(diabetic)].value_as_number
    assert 7.0 < dm.mean() < 8.5 and 5.2 < other.mean() < 5.6
    assert (a1c.unit_source_value == "%").all()


def _gi_bleed_counts(out: Path, site: str) -> tuple[int, float, int, float]:
    """(bleeds while on an NSAID, NSAID days, other bleeds, other days) — first bleeds only."""
    obs = read(out, site, "observation_period")
    observed = (days(obs.observation_period_end_date)
                - days(obs.observation_period_start_date) + 1).sum()
    drug = read(out, site, "drug_exposure")
    nsaid = drug[drug.drug_source_value.isin(["M01AE01", "M01AB05"])]
    exposed = (days(nsaid.drug_exposure_end_date) - days(nsaid.drug_exposure_start_date) + 1).sum()
    cond = read(out, site, "condition_occurrence")
    bleed = cond[cond.condition_source_value == "K92.2"].groupby("person_id",
                                                                  as_index=False).first()
    hits = bleed.merge(nsaid, on="person_id")
    on_drug = (days(hits.condition_start_date) >= days(hits.drug_exposure_start_date)) & (
        days(hits.condition_start_date) <= days(hits.drug_exposure_end_date))
    during = hits.person_id[on_drug].nunique()
    return during, float(exposed), len(bleed) - during, float(observed - exposed)


def test_nsaids_raise_gi_bleeding(net: SynthSummary) -> None:
    truth = json.loads((net.out / "_truth" / "truth.json").read_text())
    assert truth["effects"]["gi_bleed"]["hazard_ratios"]["nsaid_current"] == 2.5
    counts = np.array([_gi_bleed_counts(net.out, s) for s in net.sites]).sum(axis=0)
    on_events, on_days, off_events, off_days = counts
    assert on_events >= 30
    rate_ratio = (on_events / on_days) / (off_events / off_days)
    assert 1.5 < rate_ratio < 5.0  # crude: the stated 2.5, plus confounding by age
    # Ever-users vs never-users: weaker (exposure is a fraction of follow-up) but same sign.
    risks = []
    for site in net.sites:
        drug = read(net.out, site, "drug_exposure")
        cond = read(net.out, site, "condition_occurrence")
        users = set(drug[drug.drug_source_value.str.startswith("M01")].person_id)
        bled = set(cond[cond.condition_source_value == "K92.2"].person_id)
        person = read(net.out, site, "person").person_id
        user = person.isin(users)
        risks.append((person[user].isin(bled).sum(), user.sum(),
                      person[~user].isin(bled).sum(), (~user).sum()))
    a, n1, b, n0 = np.array(risks).sum(axis=0)
    assert (a / n1) / (b / n0) > 1.1


def test_diabetes_new_treatment_cohort_is_not_tiny(net: SynthSummary) -> None:
    """First E11 at age 40-75 with HbA1c > 7 and metformin in the 365 days up to it."""
    for site in net.sites:
        cond = read(net.out, site, "condition_occurrence")
        e11 = cond[cond.condition_source_value.str.startswith("E11")]
        first = e11.groupby("person_id", as_index=False).condition_start_date.min()
        first["index"] = days(first.condition_start_date)
        first = first.merge(read(net.out, site, "person")[["person_id", "year_of_birth"]])
        age = pd.to_datetime(first.condition_start_date).dt.year - first.year_of_birth
        first = first[age.between(40, 75)]

        def within(events: pd.DataFrame, date_col: str) -> set[int]:
            m = first.merge(events, on="person_id")
            lag = m["index"] - days(m[date_col])
            return set(m.person_id[(lag >= 0) & (lag <= 365)])

        lab = read(net.out, site, "measurement")
        a1c = within(lab[(lab.measurement_source_value == "4548-4") & (lab.value_as_number > 7)],
                     "measurement_date")
        drug = read(net.out, site, "drug_exposure")
        metformin = drug[drug.drug_source_value == "A10BA02"]
        cohort = a1c & within(metformin, "drug_exposure_start_date")
        assert len(cohort) / 10_000 >= 0.02, site
        counts = first.merge(metformin, on="person_id")
        lag = counts["index"] - days(counts.drug_exposure_start_date)
        repeat = counts[(lag >= 0) & (lag <= 365)].groupby("person_id").size()
        assert (repeat >= 2).sum() >= 30  # "≥2 metformin exposures before" finds people too


def test_truth_records_settings_effects_and_pooled_facts(net: SynthSummary) -> None:
    truth = json.loads((net.out / "_truth" / "truth.json").read_text())
    assert truth["settings"]["seed"] == 7 and truth["settings"]["persons_per_site"] == 10_000
    assert {k: v["persons"] for k, v in truth["sites"].items()} == dict.fromkeys(net.sites, 10_000)
    assert truth["sites"]["hospital_1"]["tertiary"] is True
    effects = truth["effects"]
    assert effects["diabetes_complication"]["hazard_ratio_per_1pct_hba1c"] > 1
    assert effects["heart_failure"]["hazard_ratios"]["sulfonylurea_vs_metformin"] != 1
    pooled = truth["pooled"]
    people = pd.concat([read(net.out, s, "person") for s in net.sites])
    assert pooled["unique_persons"] == people.person_source_value.nunique()
    # The de-duplicated count a linked federation should report, checked against the files.
    diabetic = []
    for site in net.sites:
        cond = read(net.out, site, "condition_occurrence")
        ids = cond[cond.condition_source_value.str.startswith("E11")].person_id.unique()
        person = read(net.out, site, "person").set_index("person_id")
        diabetic.append(person.loc[ids, "person_source_value"])
    e11 = pooled["persons_with_condition"]["type2_diabetes_E11"]
    assert e11["sum_over_sites"] == sum(len(d) for d in diabetic)
    assert e11["unique"] == pd.concat(diabetic).nunique() < e11["sum_over_sites"]
