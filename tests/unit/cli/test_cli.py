"""The CLI in-process: exit codes, JSON on stdout, errors naming the field."""

import json

import pytest

from healthspace.cli.main import run


@pytest.fixture
def site_dirs(synth_dir):
    return [f"--site=hospital_{i}={synth_dir / f'hospital_{i}'}" for i in (1, 2)]


def test_sim_count_json(capsys, site_dirs, tmp_path):
    cohort = tmp_path / "c.yaml"
    cohort.write_text("entry:\n  condition:\n    codes: ['ICD10:E11%']\n")
    assert run(["sim", "count", *site_dirs, "--cohort", str(cohort), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["sites"]) == {"hospital_1", "hospital_2"}
    assert doc["total"] == sum(doc["sites"].values())
    assert doc["total_is_lower_bound"] is False


def test_sim_count_bad_cohort_names_field(capsys, site_dirs, tmp_path):
    cohort = tmp_path / "c.json"
    cohort.write_text(json.dumps({"entry": {"condition": {"codes": ["E11"]}}}))
    assert run(["sim", "count", *site_dirs, "--cohort", str(cohort)]) == 2
    err = capsys.readouterr().err
    assert "entry.condition.codes" in err and "Traceback" not in err


def test_sim_count_bad_site_spec(capsys, tmp_path):
    cohort = tmp_path / "c.json"
    cohort.write_text(json.dumps({"entry": {"condition": {"codes": ["ICD10:E11"]}}}))
    assert run(["sim", "count", "--site", "nodir", "--cohort", str(cohort)]) == 2
    assert "NAME=DIR" in capsys.readouterr().err


def test_client_command_without_hub_names_the_flag(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("HEALTHSPACE_HUB", raising=False)
    monkeypatch.setenv("HEALTHSPACE_CONFIG", str(tmp_path / "none.toml"))
    assert run(["study", "list"]) == 2
    assert "--hub" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys):
    assert run(["no-such-command"]) == 2


def test_study_file_with_both_cohort_forms_is_rejected(capsys, tmp_path):
    study = tmp_path / "s.json"
    study.write_text(json.dumps({"analysis": "cohort_count", "cohort": {}, "cohort_path": "x"}))
    assert run(["study", "submit", str(study), "--hub", "http://127.0.0.1:9",
                "--token", "t"]) == 2
    assert "cohort_path" in capsys.readouterr().err
