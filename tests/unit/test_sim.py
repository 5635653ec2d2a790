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
