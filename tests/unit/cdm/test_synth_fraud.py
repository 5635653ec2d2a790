"""Fraud injected into the synthetic payer's claims, and the insurer's claims: files, truth and
what the payer's screening recovers from them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import open_store
from healthspace.cdm.synth import SynthSummary, generate
from healthspace.cdm.synth_fraud import MAX_GAP, MAX_LOS, QUIET_DAYS, FraudSpec, FraudSpecError
from healthspace.cli.main import run
from healthspace.cli.synth import synth
from healthspace.core.errors import InvalidInput
from healthspace.payer.cases import grouped_cases
from healthspace.payer.grouper import Case, group
from healthspace.payer.rules import load_rules
from healthspace.payer.screening import flag_claims, upcoding

# Rates well above the defaults, so a 1,500-person network holds enough injected claims to
# score the screening on (docs/synthetic-data.md gives the default-rate numbers).
NETWORK = {"sites": 3, "persons": 1_500, "seed": 0, "payer": True}
SPEC = FraudSpec(rate=0.2, upcode_share=0.8)
INSURER_CLAIMS = 300
TAMPERED = "hospital_3"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fraud")


@pytest.fixture(scope="module")
def net(root: Path) -> SynthSummary:
    return generate(root / "a", **NETWORK, fraud=SPEC, insurer_claims=INSURER_CLAIMS)


@pytest.fixture(scope="module")
def clean(root: Path) -> SynthSummary:
    return generate(root / "clean", **NETWORK)


def csv(out: Path, folder: str, table: str) -> pd.DataFrame:
    return pd.read_csv(out / folder / f"{table}.csv", dtype={"national_id": str})


@pytest.fixture(scope="module")
def truth(net: SynthSummary) -> pd.DataFrame:
    return pd.read_csv(net.out / "_truth" / "fraud.csv", dtype={"national_id": str},
                       keep_default_na=False)


@pytest.fixture(scope="module")
def claims(net: SynthSummary) -> pd.DataFrame:
    """Every payer claim with its person, hospital, principal diagnosis, charge and DRG."""
    out = net.out
    visits = csv(out, "payer", "visit_occurrence").merge(
        csv(out, "payer", "person")[["person_id", "person_source_value"]], on="person_id"
    ).merge(csv(out, "payer", "identity"), on="person_id").merge(
        csv(out, "payer", "care_site")[["care_site_id", "care_site_source_value"]],
        on="care_site_id")
    cond = csv(out, "payer", "condition_occurrence")
    principal = cond[cond.condition_status_source_value == "principal"].set_index(
        "visit_occurrence_id").condition_source_value.rename("principal")
    cost = csv(out, "payer", "cost").set_index("cost_event_id")[
        ["total_charge", "drg_source_value"]]
    proc = csv(out, "payer", "procedure_occurrence").groupby("visit_occurrence_id")[
        "procedure_source_value"].agg(lambda s: tuple(sorted(s))).rename("procedures")
    frame = visits.set_index("visit_occurrence_id").join(principal).join(cost).join(proc)
    frame["procedures"] = frame["procedures"].apply(lambda p: p if isinstance(p, tuple) else ())
    return frame


def grouped(folder: Path, store: Path) -> pd.DataFrame:
    """The folder ingested into a node store, its inpatient cases grouped by the sample rules."""
    ingest_dir(store, folder)
    con = open_store(store)
    try:
        return grouped_cases(con, load_rules())
    finally:
        con.close()


@pytest.fixture(scope="module")
def cases(net: SynthSummary, root: Path) -> pd.DataFrame:
    return grouped(net.out / "payer", root / "payer.duckdb")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.*"))}


# --- determinism and what is touched -----------------------------------------------------------


def test_same_seed_same_fraud_payer_and_insurer_files(net: SynthSummary, root: Path) -> None:
    again = generate(root / "b", **NETWORK, fraud=SPEC, insurer_claims=INSURER_CLAIMS)
    for folder in ("payer", "_truth", "insurer"):
        assert _files(net.out / folder) == _files(again.out / folder), folder
    other = generate(root / "c", **{**NETWORK, "seed": 1}, fraud=SPEC)
    assert _files(other.out / "_truth")["fraud.csv"] != _files(net.out / "_truth")["fraud.csv"]


def test_fraud_changes_only_the_payer_claims(net: SynthSummary, clean: SynthSummary) -> None:
    for site in net.sites:
        assert _files(net.out / site) == _files(clean.out / site), site
    assert _files(net.out / "payer") != _files(clean.out / "payer")
    injected = sum(v for p, v in net.fraud.items() if p != "upcoded")  # type: ignore[union-attr]
    for table in ("visit_occurrence", "cost"):
        assert net.rows["payer"][table] == clean.rows["payer"][table] + injected
    # Injection adds claims only: who is insured, and how, is unchanged.
    for table in ("person", "identity", "payer_plan_period"):
        assert _files(net.out / "payer")[f"{table}.csv"] == _files(clean.out / "payer")[
            f"{table}.csv"]
    assert not (clean.out / "_truth" / "fraud.csv").exists()
    assert json.loads((clean.out / "_truth" / "truth.json").read_text())["settings"][
        "fraud"] is None


def test_truth_files_agree_with_each_other_and_the_files(net: SynthSummary,
                                                         truth: pd.DataFrame) -> None:
    doc = json.loads((net.out / "_truth" / "fraud.json").read_text())
    assert doc["settings"] == {"rate": 0.2, "hospitals": [TAMPERED],
                               "patterns": list(SPEC.patterns), "upcode_share": 0.8, "seed": 0}
    assert doc["counts"] == truth.pattern.value_counts().to_dict() == net.fraud
    assert all(n >= 15 for n in doc["counts"].values())
    assert doc["upcoding_hospitals"] == [TAMPERED]
    assert set(truth.hospital) == {TAMPERED}
    meta = json.loads((net.out / "_truth" / "truth.json").read_text())
    assert meta["settings"]["fraud"] == doc["settings"]
    assert meta["settings"]["insurer_claims"] == INSURER_CLAIMS
    for table, n in meta["rows"]["payer"].items():  # injected rows included
        assert (net.out / "payer" / f"{table}.csv").read_text().count("\n") - 1 == n
    assert truth.payer_visit_occurrence_id.is_unique
    assert not any("truth" in p.name or "fraud" in p.name
                   for s in [*net.sites, "payer"] for p in (net.out / s).iterdir())


# --- the injected claims in the payer's files --------------------------------------------------


def test_every_labelled_claim_is_in_the_payer_files_as_stated(truth: pd.DataFrame,
                                                              claims: pd.DataFrame) -> None:
    got = claims.loc[truth.payer_visit_occurrence_id]
    assert (got.visit_concept_id == 9201).all()
    assert (got.visit_start_date.to_numpy() == truth.admitted.to_numpy()).all()
    assert (got.visit_end_date.to_numpy() == truth.discharged.to_numpy()).all()
    assert (got.care_site_source_value.to_numpy() == truth.hospital.to_numpy()).all()
    assert (got.national_id.to_numpy() == truth.national_id.to_numpy()).all()
    assert (got.person_source_value.to_numpy() == truth.person_source_value.to_numpy()).all()
    assert truth.original_visit_occurrence_id.isin(claims.index).all()
    assert (truth.code != "").to_numpy().tolist() == (truth.pattern == "upcoded").tolist()


def test_duplicates_repeat_the_original_claim(truth: pd.DataFrame, claims: pd.DataFrame,
                                              net: SynthSummary) -> None:
    dup = truth[truth.pattern == "duplicate_billing"]
    copy = claims.loc[dup.payer_visit_occurrence_id].reset_index()
    original = claims.loc[dup.original_visit_occurrence_id].reset_index()
    for col in ("person_id", "visit_start_date", "visit_end_date", "care_site_id", "principal",
                "total_charge", "drg_source_value", "procedures"):
        assert (copy[col] == original[col]).all(), col
    drugs = csv(net.out, "payer", "drug_exposure").groupby("visit_occurrence_id").size()
    assert (drugs.reindex(copy.visit_occurrence_id, fill_value=0).to_numpy()
            == drugs.reindex(original.visit_occurrence_id, fill_value=0).to_numpy()).all()


def test_split_admissions_follow_the_original_stay(truth: pd.DataFrame,
                                                   claims: pd.DataFrame) -> None:
    split = truth[truth.pattern == "split_admission"]
    new = claims.loc[split.payer_visit_occurrence_id].reset_index()
    old = claims.loc[split.original_visit_occurrence_id].reset_index()
    gap = (pd.to_datetime(new.visit_start_date) - pd.to_datetime(old.visit_end_date)).dt.days
    los = (pd.to_datetime(new.visit_end_date) - pd.to_datetime(new.visit_start_date)).dt.days
    assert gap.between(1, MAX_GAP).all() and los.between(1, MAX_LOS).all()
    assert gap.nunique() > 3 and los.nunique() > 2
    for col in ("person_id", "care_site_id", "principal", "procedures", "drg_source_value"):
        assert (new[col] == old[col]).all(), col
    share = new.total_charge / old.total_charge
    assert share.between(0.4 - 1e-4, 0.7 + 1e-4).all()
    # No other stay of the person starts between the original admission and QUIET_DAYS after
    # its discharge, so the screen sees exactly one readmission.
    ip = claims[claims.visit_concept_id == 9201]
    for _, row in old.iterrows():
        mine = ip[(ip.person_id == row.person_id)
                  & (ip.index != row.visit_occurrence_id)]
        start = pd.to_datetime(mine.visit_start_date)
        window = (start >= pd.Timestamp(row.visit_start_date)) & (
            start <= pd.Timestamp(row.visit_end_date) + pd.Timedelta(days=QUIET_DAYS))
        assert window.sum() == 1  # the split stay itself


def test_upcoded_codes_have_no_support_in_the_hospital_record(
        truth: pd.DataFrame, net: SynthSummary, cases: pd.DataFrame) -> None:
    up = truth[truth.pattern == "upcoded"]
    assert set(up.code) <= {"N18.5", "I50.0", "A41.9"} and up.code.nunique() >= 2
    assert (up.payer_visit_occurrence_id == up.original_visit_occurrence_id).all()
    cond = csv(net.out, "payer", "condition_occurrence")
    added = cond.merge(up, left_on=["visit_occurrence_id", "condition_source_value"],
                       right_on=["payer_visit_occurrence_id", "code"])
    assert len(added) == len(up)
    assert (added.condition_status_source_value == "secondary").all()
    assert (added.condition_start_date == added.admitted).all()
    # The hospital's own record of the person: no such code, nor what would support it.
    site = TAMPERED
    ids = csv(net.out, site, "identity").set_index("national_id").person_id
    hosp_cond = csv(net.out, site, "condition_occurrence")
    drugs, labs = csv(net.out, site, "drug_exposure"), csv(net.out, site, "measurement")
    for _, row in up.iterrows():
        pid = ids[row.national_id]
        codes = set(hosp_cond[hosp_cond.person_id == pid].condition_source_value)
        assert not any(c.startswith(row.code[:3]) for c in codes), (row.code, codes)
        if row.code == "I50.0":
            assert "C03CA01" not in set(drugs[drugs.person_id == pid].drug_source_value)
        if row.code == "N18.5":
            egfr = labs[(labs.person_id == pid) & (labs.measurement_source_value == "33914-3")]
            assert (egfr.value_as_number >= 15).all() and not any(
                c.startswith("E11.2") for c in codes)
    # Without the added code the grouper gives no CC/MCC in a split ADRG; with it an MCC.
    rules = load_rules()
    got = cases.set_index("visit_id").loc[up.payer_visit_occurrence_id]
    assert (got.severity == "mcc").all()
    for (_, case), code in zip(got.iterrows(), up.code, strict=True):
        before = [c for c in case.secondary if c != code]
        assert code in case.secondary and case.principal[:3] != code[:3]
        assert group(rules, Case(case.principal, before, case.procedures)).severity == "none"


# --- what the payer's screening recovers -------------------------------------------------------


def _scores(flagged: pd.DataFrame, truth: pd.DataFrame, pattern: str) -> tuple[float, float]:
    labelled = set(truth.payer_visit_occurrence_id[truth.pattern == pattern])
    hits = flagged.visit_id[flagged[pattern]]
    found = hits.isin(labelled).sum()
    return found / len(labelled), found / len(hits)


def test_screening_finds_split_admissions_and_duplicates(
        cases: pd.DataFrame, truth: pd.DataFrame, clean: SynthSummary, root: Path) -> None:
    flagged = flag_claims(cases)
    for pattern in ("split_admission", "duplicate_billing"):
        recall, precision = _scores(flagged, truth, pattern)
        assert recall >= 0.9 and precision >= 0.8, (pattern, recall, precision)
    # What is flagged beyond the injected claims was flagged without any fraud too: natural
    # readmissions, never a side effect of the injection.
    natural = flag_claims(grouped(clean.out / "payer", root / "clean.duckdb"))
    labelled = set(truth.payer_visit_occurrence_id)

    def keys(frame: pd.DataFrame) -> set[tuple[object, ...]]:
        return set(zip(frame.person_id, frame.admitted, frame.principal, strict=True))

    extra = flagged[flagged.split_admission & ~flagged.visit_id.isin(labelled)]
    assert keys(extra) <= keys(natural[natural.split_admission])
    assert not (flagged.duplicate_billing & ~flagged.visit_id.isin(labelled)).any()


def test_upcoding_signal_ranks_the_tampered_hospital_first(cases: pd.DataFrame) -> None:
    ranked = upcoding(cases)
    assert ranked[0]["hospital"] == TAMPERED, ranked
    assert ranked[0]["ratio"] == max(r["ratio"] for r in ranked) > 1.2


# --- insurer claims ----------------------------------------------------------------------------

_VERDICTS = """
WITH payer AS (
  SELECT i.national_id, CAST(v.visit_start_date AS VARCHAR) AS date,
         c.condition_source_value AS diagnosis,
         round(CAST(k.total_charge AS DOUBLE) * 100) AS fen, v.visit_concept_id AS kind
  FROM read_csv($dir || '/visit_occurrence.csv', all_varchar = true) v
  JOIN read_csv($dir || '/identity.csv', all_varchar = true) i USING (person_id)
  JOIN read_csv($dir || '/condition_occurrence.csv', all_varchar = true) c
    ON c.visit_occurrence_id = v.visit_occurrence_id
   AND c.condition_status_source_value = 'principal'
  JOIN read_csv($dir || '/cost.csv', all_varchar = true) k
    ON k.cost_event_id = v.visit_occurrence_id)
SELECT q.claim_id,
       CASE WHEN count(p.fen) = 0 THEN 'no_match'
            WHEN bool_or(p.fen = round(CAST(q.amount AS DOUBLE) * 100)) THEN 'match'
            ELSE 'amount_mismatch' END AS verdict,
       count(p.fen) AS visits, any_value(p.kind) AS kind
FROM read_csv($claims, all_varchar = true) q
LEFT JOIN payer p USING (national_id, date, diagnosis)
GROUP BY q.claim_id ORDER BY q.claim_id
"""


def test_insurer_claims_verdicts_follow_from_the_payer_data(net: SynthSummary) -> None:
    claims = pd.read_csv(net.out / "insurer" / "claims.csv", dtype=str)
    assert list(claims.columns) == ["claim_id", "national_id", "date", "diagnosis", "amount"]
    assert claims.claim_id.tolist() == [f"C{i:06d}" for i in range(1, INSURER_CLAIMS + 1)]
    assert claims.amount.str.fullmatch(r"\d+\.\d\d").all()
    expected = pd.read_csv(net.out / "_truth" / "insurer_claims.csv")
    assert expected.expected.value_counts().to_dict() == {
        "match": 180, "amount_mismatch": 60, "no_match": 60} == net.insurer
    con = duckdb.connect()
    got = con.execute(_VERDICTS, {"dir": str(net.out / "payer"),
                                  "claims": str(net.out / "insurer" / "claims.csv")}).df()
    assert got.claim_id.tolist() == expected.claim_id.tolist()
    assert got.verdict.tolist() == expected.expected.tolist()
    real = got[got.verdict != "no_match"]
    assert (real.visits == 1).all()  # unambiguous: one payer visit per (id, date, diagnosis)
    assert set(real.kind) == {"9201", "9202", "9203"}
    assert (real.kind == "9201").mean() >= 0.2
    # Half the no-match claims name persons the payer does not know, with valid ids.
    known = set(csv(net.out, "payer", "identity").national_id)
    missing = claims[expected.expected == "no_match"]
    outsiders = missing[~missing.national_id.isin(known)].national_id
    assert 20 <= len(outsiders) < len(missing)
    assert outsiders.str.fullmatch(r"\d{17}[\dX]").all()


# --- arguments, stale output and the CLI -------------------------------------------------------


def test_without_insurer_claims_a_stale_insurer_folder_goes(tmp_path: Path) -> None:
    generate(tmp_path, sites=2, persons=200, payer=True, fraud=FraudSpec(), insurer_claims=20)
    assert (tmp_path / "insurer" / "claims.csv").exists()
    generate(tmp_path, sites=2, persons=200, payer=True)
    assert {p.name for p in tmp_path.iterdir()} == {"hospital_1", "hospital_2", "payer",
                                                    "_truth"}
    assert [p.name for p in (tmp_path / "_truth").iterdir()] == ["truth.json"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"fraud": FraudSpec()}, "payer"),
    ({"insurer_claims": 5}, "payer"),
    ({"payer": True, "fraud": FraudSpec(hospitals=("hospital_9",))}, "hospital_9"),
    ({"payer": True, "insurer_claims": -1}, "insurer_claims"),
])
def test_generate_rejects_bad_fraud_arguments(tmp_path: Path, kw: dict[str, object],
                                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, sites=2, persons=50, **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "hospital_1").exists()


def test_more_insurer_claims_than_payer_visits_is_an_error_and_writes_nothing(
        tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too few visits"):
        generate(tmp_path, sites=1, persons=20, payer=True, insurer_claims=5_000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kw", "field"), [
    ({"rate": 1.5}, "rate"), ({"upcode_share": -0.1}, "upcode_share"),
    ({"patterns": ("phantom_billing",)}, "patterns"), ({"patterns": ()}, "patterns"),
])
def test_fraud_spec_rejects_bad_values(kw: dict[str, object], field: str) -> None:
    with pytest.raises(FraudSpecError) as info:
        FraudSpec(**kw)  # type: ignore[arg-type]
    assert info.value.field == field


def _synth(out: Path, **kw: object) -> None:
    args: dict[str, object] = {"sites": 3, "persons": 100, "seed": 0, "payer": False,
                               "fmt": "omop", "fraud_rate": None, "fraud_hospitals": None,
                               "fraud_patterns": None, "upcode_share": None,
                               "insurer_claims": 0, "json_out": True}
    synth(out, **{**args, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "field", "words"), [
    ({"fraud_rate": 0.1}, "fraud_rate", "--payer"),
    ({"payer": True, "fraud_rate": 2.0}, "fraud_rate", "--fraud-rate"),
    ({"payer": True, "fraud_rate": 0.1, "fraud_hospitals": "hospital_3,hospital_7"},
     "fraud_hospitals", "hospital_7"),
    ({"payer": True, "fraud_rate": 0.1, "fraud_patterns": "split_admission,kickbacks"},
     "fraud_patterns", "kickbacks"),
    ({"payer": True, "fraud_rate": 0.1, "upcode_share": 3.0}, "upcode_share", "--upcode-share"),
    ({"payer": True, "upcode_share": 0.5}, "fraud_rate", "--upcode-share"),
    ({"insurer_claims": 10}, "insurer_claims", "--payer"),
])
def test_cli_rejects_bad_fraud_options(tmp_path: Path, kw: dict[str, object], field: str,
                                       words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        _synth(tmp_path, **kw)
    assert info.value.field == field and words in info.value.message


def test_cli_fraud_rate_without_payer_exits_with_the_option_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["synth", "--out", str(tmp_path), "--fraud-rate", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "fraud_rate" in err and "--fraud-rate" in err and "--payer" in err
    assert not (tmp_path / "hospital_1").exists()


def test_cli_summary_names_fraud_counts_and_the_insurer_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["synth", "--out", str(tmp_path), "--persons", "300", "--payer", "--json",
                "--fraud-rate", "0.1", "--fraud-hospitals", "hospital_2,hospital_3",
                "--fraud-patterns", "duplicate_billing,upcoded", "--upcode-share", "0.5",
                "--insurer-claims", "40"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    truth = pd.read_csv(tmp_path / "_truth" / "fraud.csv")
    assert doc["fraud"]["counts"] == {"duplicate_billing": int(
        (truth.pattern == "duplicate_billing").sum()), "upcoded": int(
        (truth.pattern == "upcoded").sum())}
    assert set(truth.hospital) == {"hospital_2", "hospital_3"}
    assert doc["insurer"]["claims"] == str(tmp_path / "insurer" / "claims.csv")
    assert doc["insurer"]["expected"] == {"match": 24, "amount_mismatch": 8, "no_match": 8}
    settings = json.loads((tmp_path / "_truth" / "fraud.json").read_text())["settings"]
    assert settings["upcode_share"] == 0.5 and settings["rate"] == 0.1
