"""Simulation mode: the same analysis code in-process equals independent SQL on pooled data."""

import json
from pathlib import Path

import duckdb
import pytest

from healthspace.cli.main import run
from healthspace.core.errors import InvalidInput
from healthspace.sim import parse_site_args, simulate_dirs


def reference_gi_bleed(site):
    """Persons in person.csv with condition concept 192671 (GI haemorrhage), by hand."""
    return duckdb.connect().execute(f"""
        SELECT count(DISTINCT c.person_id)
        FROM read_csv_auto('{site}/condition_occurrence.csv') c
        SEMI JOIN read_csv_auto('{site}/person.csv') p ON p.person_id = c.person_id
        WHERE c.condition_concept_id = 192671""").fetchone()[0]


def test_eunomia_split_sim_equals_pooled_sql(eunomia_sites):
    sites = {p.name: p for p in eunomia_sites}
    result = simulate_dirs("cohort_count", sites,
                           cohort={"entry": {"condition": {"concepts": [192671]}}})
    expected = {name: reference_gi_bleed(path) for name, path in sites.items()}
    assert result["sites"] == expected
    assert result["total"] == sum(expected.values()) == 479
    assert result["total_is_lower_bound"] is False


def test_sim_cli_json_shape(capsys, eunomia_sites, tmp_path):
    cohort = tmp_path / "gib.json"
    cohort.write_text(json.dumps({"entry": {"condition": {"concepts": [192671]}},
                                  "inclusion": [{"sex": "F"}]}))
    args = [f"--site={p.name}={p}" for p in eunomia_sites]
    assert run(["sim", "count", *args, "--cohort", str(cohort), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 242  # Eunomia SOURCE.md: 242 women with concept 192671
    assert set(doc) >= {"sites", "total", "total_is_lower_bound", "breakdown"}


def test_site_arguments_are_validated():
    assert parse_site_args(["a=/x", "b=/y"]) == {"a": Path("/x"), "b": Path("/y")}
    for bad in (["a"], ["=x"], ["a=/x", "a=/y"], []):
        with pytest.raises(InvalidInput):
            parse_site_args(bad)


def test_sim_applies_site_policy_and_consent_like_a_node(synth_dir, tmp_path, capsys):
    import shutil

    site = tmp_path / "h2"
    shutil.copytree(synth_dir / "hospital_2", site)
    cohort = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
    base = simulate_dirs("cohort_count", {"h2": site}, cohort=cohort)["sites"]["h2"]
    people = duckdb.connect().execute(f"""
        SELECT DISTINCT p.person_source_value
        FROM read_csv_auto('{site}/condition_occurrence.csv') c
        JOIN read_csv_auto('{site}/person.csv') p USING (person_id)
        WHERE c.condition_source_value LIKE 'E11%' ORDER BY 1 LIMIT 12""").fetchall()
    lines = ["person_source_value,tier,purposes"]
    lines += [f"{psv},withheld," for (psv,) in people[:5]]
    lines += [f"{psv},research_only," for (psv,) in people[5:12]]
    (site / "consent.csv").write_text("\n".join(lines) + "\n")
    (site / "policy.yaml").write_text(
        "level: L1\nallowed_purposes: [research, drug_development]\nmin_cell_size: 11\n")
    research = simulate_dirs("cohort_count", {"h2": site}, cohort=cohort, purpose="research")
    assert research["sites"]["h2"] == base - 5
    assert research["min_cell_size"]["h2"] == 11
    pharma = simulate_dirs("cohort_count", {"h2": site}, cohort=cohort,
                           purpose="drug_development")
    assert pharma["sites"]["h2"] == base - 12
    insurer = simulate_dirs("cohort_count", {"h2": site}, cohort=cohort,
                            purpose="commercial_insurance")
    assert insurer["sites"] == {} and "commercial_insurance" in insurer["refused"]["h2"]
    cfile = tmp_path / "c.json"
    cfile.write_text(json.dumps(cohort))
    assert run(["sim", "count", f"--site=h2={site}", "--cohort", str(cfile), "--purpose",
                "drug_development", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == base - 12
