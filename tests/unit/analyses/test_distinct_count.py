"""cohort_count ``distinct``: HLL union across synthetic hospitals against an independent truth."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from nacl.signing import SigningKey

from healthspace.analyses import registry
from healthspace.analyses.base import Final
from healthspace.analyses.execute import run_local
from healthspace.cdm.schema import TABLES, ddl
from healthspace.cli.main import run
from healthspace.core.encoding import decode_array
from healthspace.core.errors import InvalidInput
from healthspace.privacy import hll
from healthspace.privacy.secagg import Participant
from healthspace.sim import load_site, simulate

HOSPITALS = ("hospital_1", "hospital_2", "hospital_3")
T2D = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
HTN = {"entry": {"condition": {"codes": ["ICD10:I10%"]}}}


@pytest.fixture(scope="module")
def sites(synth_dir):
    loaded = {name: load_site(synth_dir / name) for name in HOSPITALS}
    yield loaded
    for site in loaded.values():
        site.con.close()


def true_union(synth_dir, prefix):
    """Distinct pseudonyms of persons with a condition code starting with ``prefix``
    (pandas over the CSVs, independent of the cohort compiler)."""
    pseudonyms, naive = set(), 0
    for name in HOSPITALS:
        person = pd.read_csv(synth_dir / name / "person.csv", dtype={"person_source_value": str})
        cond = pd.read_csv(synth_dir / name / "condition_occurrence.csv",
                           dtype={"condition_source_value": str})
        hit = cond.loc[cond["condition_source_value"].str.startswith(prefix, na=False),
                       "person_id"].unique()
        naive += len(hit)
        pseudonyms |= set(person.loc[person["person_id"].isin(hit), "person_source_value"])
    return len(pseudonyms), naive


@pytest.mark.parametrize(("cohort", "prefix", "truth_key"),
                         [(T2D, "E11", "type2_diabetes_E11"), (HTN, "I10", "hypertension_I10")])
def test_distinct_total_is_within_its_error_of_the_true_union(sites, synth_dir, cohort, prefix,
                                                              truth_key):
    result = simulate("cohort_count", sites, cohort=cohort,
                      params={"breakdown": False, "distinct": True, "distinct_salt": "study-1"})
    unique, naive = true_union(synth_dir, prefix)
    pooled = json.loads((synth_dir / "_truth" / "truth.json").read_text())["pooled"]
    assert pooled["persons_with_condition"][truth_key] == {"unique": unique,
                                                           "sum_over_sites": naive}
    assert result["total"] == naive > unique  # shared patients are double-counted by the sum
    assert abs(result["distinct_total"] - unique) <= result["distinct_total_error"]
    assert result["distinct_total"] < result["total"]
    se = hll.standard_error(hll.DEFAULT_PRECISION)
    assert result["distinct_total_error"] == pytest.approx(2 * se * result["distinct_total"],
                                                           abs=1)
    assert result["distinct_method"] == "hll" and result["distinct_confidence"] == 0.95
    assert result["distinct_total_is_lower_bound"] is False
    assert result["distinct_unlinked"] == dict.fromkeys(HOSPITALS, 0)


def test_masked_site_sketches_aggregate_to_the_released_union(sites):
    params = {"breakdown": False, "distinct": True, "distinct_salt": "s", "distinct_precision": 10}
    partials = {name: run_local(site.con, site=name, analysis="cohort_count", params=params,
                                cohort=T2D).partial for name, site in sites.items()}
    sketches = {name: hll.unpack(decode_array(p["distinct"]["sketch"]), 10)
                for name, p in partials.items()}
    keys = {n: SigningKey(bytes([i + 1]) * 32) for i, n in enumerate(HOSPITALS)}
    parts = {n: Participant("study-9", n, keys[n]) for n in HOSPITALS}
    for part in parts.values():
        part.accept_roster([p.announcement for p in parts.values()],
                           {n: k.verify_key.encode().hex() for n, k in keys.items()})
    payloads = [hll.mask_sketch(sketches[n], node=n, private_key=parts[n].private_key,
                                peers=parts[n].peers, session_id="study-9", round=0)
                for n in HOSPITALS]
    summed = hll.merge_masked(payloads)
    assert np.array_equal(summed, hll.merge(sketches.values()))
    impl = registry.get("cohort_count")
    outcome = impl.combine(partials, impl.parse_params(params), {}, 1)
    assert isinstance(outcome, Final)
    assert outcome.result["distinct_total"] == round(hll.estimate(summed))


def make_site(people, site_code=1):
    """people: list of (person_id, person_source_value or None); everyone has E11."""
    con = duckdb.connect()
    for table in TABLES:
        con.execute(ddl(table))
    con.execute("INSERT INTO concept (concept_id, vocabulary_id, concept_code) "
                "VALUES (2000000001, 'ICD10', 'E11.9')")
    for i, (pid, psv) in enumerate(people):
        con.execute("INSERT INTO person (person_id, gender_concept_id, year_of_birth, "
                    "person_source_value) VALUES (?, 8532, 1970, ?)", [pid, psv])
        con.execute("INSERT INTO condition_occurrence (condition_occurrence_id, person_id, "
                    "condition_concept_id, condition_start_date) VALUES (?, ?, 2000000001, "
                    "'2020-01-01')", [i + 1, pid])
    return con


def partial(con, site, k=10):
    return run_local(con, site=site, analysis="cohort_count", cohort=T2D, min_cell_size=k,
                     params={"breakdown": False, "distinct": True}).partial


def combine(partials):
    impl = registry.get("cohort_count")
    outcome = impl.combine(partials, impl.parse_params({"distinct": True}), {}, 1)
    assert isinstance(outcome, Final)
    return outcome.result


def test_shared_pseudonyms_count_once_and_missing_ones_never_merge():
    a = make_site([(i, f"psv{i}") for i in range(40)] + [(100 + i, None) for i in range(12)])
    b = make_site([(i, f"psv{i}") for i in range(20, 60)] + [(100 + i, "") for i in range(12)])
    result = combine({"a": partial(a, "a"), "b": partial(b, "b")})
    # 60 pseudonyms + 24 unlinked persons (same local ids at both sites, still distinct)
    assert result["total"] == 104
    assert abs(result["distinct_total"] - 84) <= result["distinct_total_error"] <= 2
    assert result["distinct_unlinked"] == {"a": 12, "b": 12}


def test_small_groups_are_never_released():
    small = make_site([(i, f"psv{i}") for i in range(9)])
    assert partial(small, "s")["distinct"]["sketch"] is None
    few_unlinked = make_site([(i, f"psv{i}") for i in range(30)] + [(99, None)])
    assert partial(few_unlinked, "f")["distinct"]["unlinked"] == "<10"
    few_linked = make_site([(i, None) for i in range(30)] + [(99, "psv")])
    assert partial(few_linked, "l")["distinct"]["unlinked"] == "<10"
    big = make_site([(i, f"psv{i}") for i in range(30)])
    result = combine({"small": partial(small, "small"), "big": partial(big, "big")})
    assert result["distinct_total"] == 30 and result["distinct_total_is_lower_bound"] is True
    assert result["distinct_sites"] == ["big"]


def test_distinct_needs_exact_counts():
    impl = registry.get("cohort_count")
    for other in ({"dp_epsilon": 1.0}, {"obfuscate": True}):
        with pytest.raises(InvalidInput, match="distinct"):
            impl.parse_params({"distinct": True, **other})
    assert impl.parse_params({}).distinct is False  # off by default: nothing extra leaves


def test_sim_count_distinct_json(capsys, sites, synth_dir, tmp_path):
    cohort = tmp_path / "c.json"
    cohort.write_text(json.dumps(T2D))
    args = [f"--site={name}={synth_dir / name}" for name in HOSPITALS]
    assert run(["sim", "count", *args, "--cohort", str(cohort), "--distinct", "--json",
                "--no-breakdown"]) == 0
    doc = json.loads(capsys.readouterr().out)
    _, naive = true_union(synth_dir, "E11")
    assert doc["total"] == naive and doc["distinct_method"] == "hll"
    assert doc["distinct_total"] < naive
    # A thin layer: the same numbers as the Python API (default salt: from the cohort).
    api = simulate("cohort_count", sites, cohort=T2D,
                   params={"breakdown": False, "distinct": True})
    assert {k: doc[k] for k in api if k.startswith("distinct")} == \
        {k: v for k, v in api.items() if k.startswith("distinct")}


def test_sim_count_distinct_table(capsys, synth_dir, tmp_path):
    cohort = tmp_path / "c.json"
    cohort.write_text(json.dumps(T2D))
    args = [f"--site={name}={synth_dir / name}" for name in HOSPITALS[:2]]
    assert run(["sim", "count", *args, "--cohort", str(cohort), "--distinct"]) == 0
    assert "distinct persons (HLL)" in capsys.readouterr().out
