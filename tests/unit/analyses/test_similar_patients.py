"""The similar-patient lookup's pure parts, and its local step on a real synthetic store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from healthspace.analyses import similar_features as features
from healthspace.analyses import similar_patients as sp
from healthspace.analyses import similar_pool
from healthspace.analyses.execute import run_local
from healthspace.analyses.registry import get
from healthspace.analyses.similar_params import SimilarParams
from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import open_store
from healthspace.core.errors import InvalidInput, Refused
from healthspace.sim import load_store_site, simulate

COHORT = {"name": "T2D", "entry": {"condition": {"codes": ["ICD10:E11%"]}}}
PARAMS = {
    "profile": {"age": 60, "sex": "F", "conditions": ["ICD10:E11.9"],
                "labs": {"LOINC:4548-4": 7.9}, "drugs": ["ATC:A10BA02"]},
    "k": 30,
    "treatments": [{"name": "insulin", "codes": ["ATC:A10AB%"], "window_days": 365}],
    "outcomes": [{"name": "death", "death": True, "horizon_days": 1825}],
}


@pytest.fixture(scope="module")
def stores(synth_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("similar")
    paths = {}
    for name in ("hospital_1", "hospital_2"):
        paths[name] = out / f"{name}.duckdb"
        ingest_dir(paths[name], synth_dir / name)
    return paths


def test_params_errors_name_the_field() -> None:
    impl = get("similar_patients")
    bad = [
        ({**PARAMS, "profile": {**PARAMS["profile"], "conditions": ["ICD10:E11%"]}},
         "params.profile.conditions"),
        ({**PARAMS, "km_outcome": "stroke"}, "params"),
        ({**PARAMS, "similarity": {"numeric": {"LOINC:718-7": 1}}}, "params"),
        ({**PARAMS, "k": 5}, "params.k"),
        ({**PARAMS, "outcomes": []}, "params.outcomes"),
        ({**PARAMS, "outcomes": [{"name": "x"}]}, "params.outcomes[0]"),
        ({**PARAMS, "profile": {**PARAMS["profile"], "age": -1}}, "params.profile.age"),
    ]
    for params, field in bad:
        with pytest.raises(InvalidInput) as info:
            impl.parse_params(params)
        assert info.value.field == field, (params, info.value.field)


def test_default_weights_are_age_the_profile_labs_and_both_code_sets() -> None:
    parsed = SimilarParams.model_validate(PARAMS)
    assert parsed.numeric_weights() == {"age": 1.0, "LOINC:4548-4": 1.0}
    assert parsed.set_weights() == {"conditions": 1.0, "drugs": 1.0}
    assert parsed.km_name() == "death"


def test_jaccard_matches_python_sets_at_the_prefix_level() -> None:
    codes = ("ATC:A10AB01", "ATC:A10BA02", "ICD10:E11.21", "ICD10:E11.9", "ICD10:I10")
    rows = [{0, 1}, {3}, {2, 3, 4}, set()]
    matrix = sparse.csr_matrix(np.asarray([[i in r for i in range(len(codes))] for r in rows]))
    mine = ["ICD10:E11.5", "ICD10:I10"]
    got = sp.jaccard(matrix, codes, 3, mine)
    wanted = {features.truncate(c, 3) for c in mine}
    for row, value in zip(rows, got, strict=True):
        have = {features.truncate(codes[i], 3) for i in row}
        union = have | wanted
        assert value == pytest.approx(1 - len(have & wanted) / len(union))
    empty = sp.jaccard(matrix[3:], codes, None, [])
    assert empty.tolist() == [0.0]  # two empty sets are at distance 0


def test_nearest_takes_the_k_smallest_and_breaks_ties_by_person_id() -> None:
    distance = np.asarray([0.5, 0.1, 0.5, 0.5, 0.9, 0.2])
    person = np.asarray([60, 50, 40, 30, 20, 10])
    chosen = sp.nearest(distance, person, 4)
    assert person[chosen].tolist() == [50, 10, 30, 40]
    assert sp.nearest(distance, person, 10).size == 6


def test_histogram_bins_hold_at_least_k_and_pool_exactly() -> None:
    rng = np.random.default_rng(3)
    parts = {}
    for site in ("a", "b"):
        d = rng.gamma(4.0, 0.15, size=200)
        part = sp._histogram(d, 10)
        assert all(count >= 10 for _, _, count in part["bins"])
        assert sum(count for _, _, count in part["bins"]) == 200
        assert part["bins"][0][0] == 0 and part["bins"][-1][1] == len(sp.EDGES) - 1
        parts[site] = part
    pooled = similar_pool._pool_similarity(parts, 400)
    assert sum(pooled["counts"]) == 400
    assert all(c >= 10 for c in pooled["counts"])
    assert pooled["edges"][0] == 0.0 and pooled["edges"][-1] is None


def test_local_refuses_k_below_the_cell_size_and_a_bad_round_input(stores) -> None:
    con = open_store(stores["hospital_1"], read_only=True)
    try:
        with pytest.raises(Refused, match="minimum cell size"):
            run_local(con, site="h1", analysis="similar_patients",
                      params={**PARAMS, "k": 10}, cohort=COHORT, min_cell_size=11)
        with pytest.raises(InvalidInput) as info:
            run_local(con, site="h1", analysis="similar_patients", params=PARAMS,
                      cohort=COHORT, round_input={"other": 1})
        assert info.value.field == "round_input"
    finally:
        con.close()


def test_feature_cache_builds_once_and_rebuilds_on_a_new_store(stores) -> None:
    cache = features.FeatureCache()
    first = open_store(stores["hospital_1"], read_only=True)
    run = run_local(first, site="h1", analysis="similar_patients", params=PARAMS,
                    cohort=COHORT, feature_cache=cache)
    run_local(first, site="h1", analysis="similar_patients", params=PARAMS, cohort=COHORT,
              feature_cache=cache)
    assert cache.builds == 1
    (key,) = cache.keys()
    n_first = cache.entries[key].n
    assert run.partial["candidates"] == n_first
    second = open_store(stores["hospital_2"], read_only=True)  # "the store changed"
    assert cache.rebuild(second) == 1
    n_second = cache.entries[key].n
    cohort_sql = ("SELECT count(DISTINCT o.person_id) FROM condition_occurrence o JOIN concept c "
                  "ON c.concept_id = o.condition_concept_id WHERE c.vocabulary_id = 'ICD10' "
                  "AND c.concept_code LIKE 'E11%'")
    assert n_second == second.execute(cohort_sql).fetchone()[0]
    assert n_first == first.execute(cohort_sql).fetchone()[0]
    first.close()
    second.close()


def test_simulation_pools_two_sites_and_suppresses_small_groups(stores) -> None:
    from healthspace.governance.policy import UsagePolicy

    sites = {name: load_store_site(path) for name, path in stores.items()}
    for site in sites.values():
        site.policy = UsagePolicy(allowed_purposes=["clinical_care"])
    result = simulate("similar_patients", sites, params=PARAMS, cohort=COHORT,
                      purpose="clinical_care")
    assert result["matched"] == 60
    groups = {g["name"]: g for g in result["groups"]}
    assert set(groups) == {"insulin", sp.NONE, sp.ALL}
    assert groups[sp.ALL]["treated"] == 60 and groups[sp.ALL]["km"] is not None
    for group in groups.values():
        if isinstance(group["treated"], str):
            assert group["km"] is None and group["share"] is None
        else:
            assert group["treated"] >= 10
    # the two partition cells (insulin / none) sum to the matched set where both are released
    if all(isinstance(groups[n]["treated"], int) for n in ("insulin", sp.NONE)):
        assert groups["insulin"]["treated"] + groups[sp.NONE]["treated"] == 60
    for site in sites.values():
        site.con.close()
