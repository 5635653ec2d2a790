"""The casemix analysis across sites against the pooled computation, and its CLI commands."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from healthspace.cli.main import run
from healthspace.sim import simulate_dirs

from .conftest import SITES


def test_secure_casemix_equals_the_pooled_groups(synth_dir, pooled):
    result = simulate_dirs("casemix", {n: synth_dir / n for n in SITES}, secure=True)
    assert result["cases"] == len(pooled)
    assert result["sites"] == pooled.groupby("site").size().to_dict()
    overall = pooled["cost"].mean()
    assert result["mean_charge"] == pytest.approx(overall, rel=1e-9)
    stats = pooled.groupby("drg").agg(n=("cost", "size"), charge=("cost", "mean"),
                                      los=("los", "mean"))
    shown = {g["drg"]: g for g in result["groups"]}
    assert set(shown) == set(stats.index)
    for drg, row in stats.iterrows():
        g = shown[drg]
        if row["n"] < 10:
            assert g["cases"] is None and g["suppressed"] is True
            continue
        assert g["cases"] == row["n"]
        assert g["mean_los"] == pytest.approx(row["los"], rel=1e-9)
        assert g["mean_charge"] == pytest.approx(row["charge"], rel=1e-9)
        assert g["relative_weight"] == pytest.approx(row["charge"] / overall, rel=1e-9)


def test_clear_casemix_suppresses_small_cells_on_each_node(synth_dir, pooled):
    result = simulate_dirs("casemix", {n: synth_dir / n for n in SITES})
    per_site = pooled.groupby(["site", "drg"]).size()
    kept = per_site[per_site >= 10]
    assert result["cases"] == int(kept.sum())
    assert result["suppressed_cells_at_nodes"] == int((per_site < 10).sum())


def test_payer_group_on_a_store_and_sim_casemix(synth_dir, tmp_path, capsys, pooled):
    from healthspace.cdm.ingest import ingest_dir

    store = tmp_path / "h1.duckdb"
    ingest_dir(store, synth_dir / "hospital_1")
    out = tmp_path / "cases.csv"
    assert run(["payer", "group", "--store", str(store), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mine = pooled[pooled["site"] == "hospital_1"]
    assert doc["cases"] == len(mine)
    written = pd.read_csv(out)
    assert written["drg"].value_counts().to_dict() == mine["drg"].value_counts().to_dict()
    args = ["sim", "casemix", "--secure", "--json"]
    for name in SITES:
        args += ["--site", f"{name}={synth_dir / name}"]
    assert run(args) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == len(pooled)


def test_a_bad_rule_file_exits_2_naming_the_field(synth_dir, tmp_path, capsys):
    bad = tmp_path / "rules.json"
    bad.write_text(json.dumps({"name": "x", "version": "1", "mdc": [], "adrg": []}))
    code = run(["sim", "casemix", "--site", f"a={synth_dir / 'hospital_1'}", "--rules",
                str(bad), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "rules.mdc" in captured.err and "Traceback" not in captured.err


def test_sim_drg_weights_command(synth_dir, capsys):
    args = ["sim", "drg-weights", "--trim", "3sd"]
    for name in SITES:
        args += ["--site", f"{name}={synth_dir / name}"]
    assert run([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trim"] == "3sd" and doc["groups"]
    assert run(args) == 0  # the table view
    assert "DRG weights" in capsys.readouterr().out
