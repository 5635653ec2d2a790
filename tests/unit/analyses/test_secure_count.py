"""cohort_count under secure aggregation: exact network totals, per-site counts only where safe."""

import pytest
from test_cohort_count import COHORT, make_site

from healthspace.analyses.cohort_count import _secure_counts, breakdown_keys
from healthspace.governance.policy import UsagePolicy
from healthspace.sim import Site, simulate, simulate_dirs


def people(n, start, yob=1960, gender=8532):
    return [(start + i, gender, yob, "2020-01-01") for i in range(n)]


@pytest.fixture
def three_sites():
    sites = {"a": Site(make_site(people(40, 0))), "b": Site(make_site(people(25, 100))),
             "c": Site(make_site(people(4, 200)))}  # c is below k = 10
    yield sites
    for site in sites.values():
        site.con.close()


def test_exact_total_includes_a_suppressed_site_but_never_reveals_it(three_sites):
    plain = simulate("cohort_count", three_sites, cohort=COHORT)
    assert plain["total"] == 65 and plain["total_is_lower_bound"]
    secure = simulate("cohort_count", three_sites, cohort=COHORT, secure=True)
    assert secure["secure_aggregation"] is True
    assert secure["total"] == 69 and secure["total_is_lower_bound"] is False
    # c alone hides its count: total minus the others would reveal 4, so nothing per site.
    assert secure["sites"] == {"a": None, "b": None, "c": None}
    assert secure["sites_withheld"] is True
    cells = {(c["age_band"], c["sex"]): c["count"] for c in secure["breakdown"]["network"]}
    assert cells[("60-69", "F")] == 69
    assert len(cells) == len(breakdown_keys())


def test_l3_policy_turns_it_on_and_withholds_site_counts():
    sites = {name: Site(make_site(people(n, i * 100)), policy=UsagePolicy(level="L3"))
             for i, (name, n) in enumerate({"a": 30, "b": 20}.items())}
    try:
        result = simulate("cohort_count", sites, cohort=COHORT)
    finally:
        for site in sites.values():
            site.con.close()
    assert result["secure_aggregation"] is True and result["total"] == 50
    assert result["sites"] == {"a": None, "b": None}


def test_site_counts_shown_when_every_site_allows_and_none_is_small():
    sites = {name: Site(make_site(people(n, i * 100))) for i, (name, n)
             in enumerate({"a": 30, "b": 20, "c": 12}.items())}
    try:
        result = simulate("cohort_count", sites, cohort=COHORT, secure=True)
    finally:
        for site in sites.values():
            site.con.close()
    assert result["sites"] == {"a": 30, "b": 20, "c": 12} and result["total"] == 62
    assert result["sites_withheld"] is False


@pytest.mark.parametrize(("shown", "total", "safe"), [
    ({"a": 30, "b": None, "c": None}, 60, True),    # two hidden sites, hidden sum 30 >= k
    ({"a": 30, "b": None, "c": None}, 35, False),   # hidden sum 5 < k
    ({"a": 30, "b": 20, "c": None}, 62, False),     # one hidden site: 62 - 50 reveals it
    ({"a": 30, "b": "<10", "c": "<10"}, 40, True),  # two small sites, hidden sum 10
    ({"a": 30, "b": "<10", "c": "<10"}, 35, False),
    ({"a": None, "b": None, "c": None}, 7, False),  # a small total hides everything
])
def test_combination_rule(shown, total, safe):
    publics = {name: {"min_cell_size": 10, "count": value} for name, value in shown.items()}
    result = _secure_counts(publics, total, [0] * len(breakdown_keys()), breakdown=False)
    assert result["sites_withheld"] is (not safe)
    if safe:
        assert result["sites"] == shown
    else:
        assert set(result["sites"].values()) == {None}
    assert result["total"] == (total if total >= 10 else "<10")


def test_synthetic_hospitals_secure_total_matches_plain_sum(synth_dir):
    sites = {f"hospital_{i}": synth_dir / f"hospital_{i}" for i in (1, 2, 3)}
    cohort = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
    plain = simulate_dirs("cohort_count", sites, cohort=cohort)
    secure = simulate_dirs("cohort_count", sites, cohort=cohort, secure=True)
    assert not plain["total_is_lower_bound"]
    assert secure["total"] == plain["total"]
    assert secure["sites"] == plain["sites"]  # no site is small: all may be shown
    pooled = {}
    for cells in plain["breakdown"].values():
        for c in cells:
            if isinstance(c["count"], int):
                pooled[(c["age_band"], c["sex"])] = pooled.get((c["age_band"], c["sex"]), 0) \
                    + c["count"]
    for c in secure["breakdown"]["network"]:
        if isinstance(c["count"], int):
            assert c["count"] >= pooled.get((c["age_band"], c["sex"]), 0)


def test_distinct_sketches_are_masked_and_match_the_plain_estimate(synth_dir):
    sites = {f"hospital_{i}": synth_dir / f"hospital_{i}" for i in (1, 2, 3)}
    cohort = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
    params = {"distinct": True, "distinct_salt": "study-9"}
    plain = simulate_dirs("cohort_count", sites, cohort=cohort, params=params)
    secure = simulate_dirs("cohort_count", sites, cohort=cohort, params=params, secure=True)
    # The summed sketch is the same whether the hub adds plain or masked sketches.
    assert secure["distinct_total"] == plain["distinct_total"]
    assert secure["distinct_total_error"] == plain["distinct_total_error"]
    assert secure["distinct_total"] < secure["total"]  # shared patients counted once
