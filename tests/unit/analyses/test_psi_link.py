"""psi_link: private record linkage between two sites equals the plain intersection."""

from __future__ import annotations

import duckdb
import pytest

from healthspace.core.errors import InvalidInput
from healthspace.sim import load_site, simulate

COHORT = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}


def cohort_ids(site_dir) -> set[str]:
    """National ids of the site's E11 patients, straight from the CSV files (reference)."""
    con = duckdb.connect()
    rows = con.execute(
        "SELECT DISTINCT i.national_id FROM read_csv(?, all_varchar = true) c "
        "JOIN read_csv(?, all_varchar = true) i ON i.person_id = c.person_id "
        "JOIN read_csv(?, all_varchar = true) k "
        "  ON k.concept_id IN (c.condition_concept_id, c.condition_source_concept_id) "
        "WHERE k.vocabulary_id = 'ICD10' AND k.concept_code LIKE 'E11%'",
        [str(site_dir / "condition_occurrence.csv"), str(site_dir / "identity.csv"),
         str(site_dir / "concept.csv")]).fetchall()
    return {r[0].strip().upper() for r in rows}


@pytest.fixture(scope="module")
def two_sites(synth_dir):
    sites = {name: load_site(synth_dir / name) for name in ("hospital_1", "hospital_2")}
    yield sites
    for site in sites.values():
        site.con.close()


@pytest.mark.parametrize("group", ["ed25519", "x25519"])
def test_intersection_size_equals_the_plain_intersection(two_sites, synth_dir, group):
    truth = cohort_ids(synth_dir / "hospital_1") & cohort_ids(synth_dir / "hospital_2")
    assert len(truth) >= 10  # the synthetic hospitals share patients
    result = simulate("psi_link", two_sites, cohort=COHORT,
                      params={"receiver": "hospital_1", "group": group})
    assert result["intersection"] == len(truth)
    assert result["sites"]["hospital_1"] == len(cohort_ids(synth_dir / "hospital_1"))
    assert result["members_kept_at"] is None and two_sites["hospital_1"].links == []


def test_membership_is_kept_only_at_the_receiver(two_sites, synth_dir):
    truth = cohort_ids(synth_dir / "hospital_1") & cohort_ids(synth_dir / "hospital_2")
    result = simulate("psi_link", two_sites, cohort=COHORT,
                      params={"receiver": "hospital_2", "mode": "membership"})
    site = two_sites["hospital_2"]
    assert result["members_kept_at"] == "hospital_2" and "members" not in result
    assert {site.identities[p].strip().upper() for p in site.links} == truth
    assert two_sites["hospital_1"].links == []
    site.links.clear()


def test_exactly_two_nodes_and_a_receiver_among_them(two_sites, synth_dir):
    with pytest.raises(InvalidInput) as info:
        simulate("psi_link", two_sites, cohort=COHORT, params={"receiver": "hospital_9"})
    assert info.value.field == "params.receiver"
    three = {**two_sites, "hospital_3": load_site(synth_dir / "hospital_3")}
    try:
        with pytest.raises(InvalidInput) as info:
            simulate("psi_link", three, cohort=COHORT, params={"receiver": "hospital_1"})
        assert info.value.field == "nodes"
    finally:
        three["hospital_3"].con.close()


def test_cli_link_json_and_a_bad_receiver(synth_dir, tmp_path, capsys):
    import json

    from healthspace.cli.main import run

    cohort = tmp_path / "cohort.json"
    cohort.write_text(json.dumps(COHORT))
    argv = ["sim", "link", "--cohort", str(cohort), "--receiver", "hospital_1",
            "--site", f"hospital_1={synth_dir / 'hospital_1'}",
            "--site", f"hospital_2={synth_dir / 'hospital_2'}"]
    assert run([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    truth = cohort_ids(synth_dir / "hospital_1") & cohort_ids(synth_dir / "hospital_2")
    assert doc["intersection"] == len(truth) and doc["mode"] == "size"
    bad = [a if a != "hospital_1" else "nowhere" for a in argv]
    assert run(bad) == 2
    assert "params.receiver" in capsys.readouterr().err
