"""``healthspace cds`` in process: options to the study, errors naming the option before
anything is sent, the result as JSON only or as tables — against a stand-in hub."""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from healthspace.cli import cds
from healthspace.cli.cds_render import show_lookup
from healthspace.cli.main import run
from healthspace.client.lookup import PRESETS, lookup_spec
from healthspace.core.models import StudySpec, StudyView

EXAMPLE = str(resources.files("healthspace.examples").joinpath("cds_profile_t2d.json"))
KM = {"timeline": [0.0, 60.0, 200.0, 400.0], "survival": [1.0, 0.95, 0.9, 0.8],
      "ci_lower": [1.0, 0.9, 0.83, 0.7], "ci_upper": [1.0, 0.99, 0.95, 0.88],
      "at_risk": [200, 180, 150, 90], "median": None}
RESULT: dict[str, Any] = {
    "k": 200, "min_cell_size": 10, "matched": 400,
    "nodes": {"hospital_1": {"candidates": 1105, "matched": 200},
              "hospital_2": {"candidates": "<10", "matched": 200}},
    "standardisation": {"age": {"mean": 61.2, "sd": 12.1, "n": 1733}},
    "features_dropped": ["LOINC:33914-3"],
    "similarity": {"edges": [0, 0.5, 1, None], "counts": [120, 250, 30],
                   "suppressed_cells": 1, "mean": 0.71, "sd": 0.4},
    "km_outcome": "ckd",
    "groups": [
        {"name": "insulin", "kind": "treatment", "treated": 44, "share": 0.11,
         "outcomes": {"ckd": {"events": 12, "rate": 0.2727},
                      "death": {"events": "<10", "rate": None, "rate_range": [0.0, 0.2]}},
         "km": {**KM, "median": 380.0}, "nodes_suppressed": ["hospital_2"]},
        {"name": "none of the candidates", "kind": "none", "treated": 300, "share": 0.75,
         "outcomes": {"ckd": {"events": 90, "rate": 0.3}, "death": {"events": 20,
                                                                   "rate": 0.0667}},
         "km": KM, "nodes_suppressed": []},
        {"name": "all matched", "kind": "all", "treated": 400, "share": 1.0,
         "outcomes": {"ckd": {"events": 110, "rate": 0.275}, "death": {"events": 25,
                                                                      "rate": 0.0625}},
         "km": None, "nodes_suppressed": []},
    ],
}


def view(status: str, result: dict[str, Any] | None = None) -> StudyView:
    return StudyView.model_validate({
        "id": 7, "analysis": "similar_patients", "params": {}, "purpose": "clinical_care",
        "nodes": ["hospital_1", "hospital_2"], "status": status, "round": 2,
        "submitted_by": "alice", "created_at": "2025-03-01T09:00:00Z",
        "updated_at": "2025-03-01T09:00:00Z", "result": result})


class StandIn:
    """The part of HubClient the command uses."""

    def __init__(self, final: StudyView) -> None:
        self.final, self.submitted = final, []

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, spec: StudySpec) -> StudyView:
        self.submitted.append(spec)
        return view("running")

    def wait(self, study_id: int, timeout: float = 600.0, on_update: Any = None) -> StudyView:
        on_update(view("running"))
        return self.final


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    stand_in = StandIn(view("completed", RESULT))
    monkeypatch.setattr(cds, "client", lambda hub, token: stand_in)
    return stand_in


def test_options_become_the_study_the_client_builds(hub: StandIn, capsys: Any) -> None:
    code = run(["cds", "lookup", EXAMPLE, "--treatments", "statin, metformin",
                "--treatment", "glp1=ATC:A10BJ%@60", "--treatment", "pci=ICD10PCS:027034Z",
                "--outcome", "ckd=ICD10:N18%@365", "--k", "50", "--nodes", "hospital_1",
                "--json"])
    assert code == 0
    assert hub.submitted == [lookup_spec(
        Path(EXAMPLE), presets=["statin", "metformin"],
        treatments=["glp1=ATC:A10BJ%@60", "pci=ICD10PCS:027034Z"],
        outcomes=["ckd=ICD10:N18%@365"], k=50, nodes=["hospital_1"])]
    spec = hub.submitted[0]
    assert [t["name"] for t in spec.params["treatments"]] == [
        "insulin", "sulfonylurea", "statin", "metformin", "glp1", "pci"]
    assert (spec.params["k"], spec.nodes) == (50, ["hospital_1"])
    assert json.loads(capsys.readouterr().out) == RESULT  # the result only


@pytest.mark.parametrize(("args", "named"), [
    (["--treatment", "insulin2"], "--treatment"),
    (["--treatment", "x=E11"], "--treatment"),
    (["--treatments", "insulin"], "given twice"),
    (["--treatments", "magic"], "treatments"),
    (["--outcome", "ckd@90"], "--outcome"),
    (["--k", "5"], "k"),
    (["--nodes", "a,a"], "nodes"),
])
def test_bad_options_fail_before_anything_is_sent(hub: StandIn, capsys: Any,
                                                  args: list[str], named: str) -> None:
    assert run(["cds", "lookup", EXAMPLE, *args]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert hub.submitted == []


def test_a_bad_profile_file_names_the_field(hub: StandIn, capsys: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"profile": {"age": 62, "conditions": ["E11.9"]}}))
    assert run(["cds", "lookup", str(path)]) == 2
    assert "profile.conditions" in capsys.readouterr().err
    assert run(["cds", "lookup", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_without_a_hub_the_flag_is_named(capsys: Any, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.delenv("HEALTHSPACE_HUB", raising=False)
    monkeypatch.setenv("HEALTHSPACE_CONFIG", str(tmp_path / "none.toml"))
    assert run(["cds", "lookup", EXAMPLE]) == 2
    assert "--hub" in capsys.readouterr().err


def test_the_tables(hub: StandIn, capsys: Any) -> None:
    assert run(["cds", "lookup", EXAMPLE]) == 0
    captured = capsys.readouterr()
    assert "study 7 submitted" in captured.err
    assert "study 7 similar_patients: completed" in captured.out
    assert "similar patients per node" in captured.out and "insulin" in captured.out
    console = Console(width=200, file=io.StringIO(), record=True)
    show_lookup(console, RESULT)
    text = console.export_text()
    for expected in ("400 similar patients (k = 200 per node; cells below 10 shown as <10)",
                     "hospital_1 │ 1,105", "hospital_2 │ <10", "0–0.5", "≥ 1",
                     "distance: mean 0.71, SD 0.4; 1 suppressed node cell(s) not counted",
                     "│ insulin                │ 44      │ 11.0 %  │ 12 (27.3 %)        │ "
                     "<10 (0.0–20.0 %)",
                     "│ none of the candidates │ 300", "│ all matched            │ 400",
                     "median time to ckd",
                     "│ 380", "not reached", "free of ckd (Kaplan–Meier)", "day 30", "day 365",
                     "│ 1.000  │ 0.950  │ 0.950   │ 0.900",
                     "features left out of the distance: LOINC:33914-3",
                     "insulin: not released by hospital_2"):
        assert expected in text, expected


def test_a_partial_or_failed_lookup_exits_with_the_study_code(hub: StandIn,
                                                             capsys: Any) -> None:
    hub.final = view("partial", RESULT)
    assert run(["cds", "lookup", EXAMPLE]) == 4
    capsys.readouterr()
    failed = view("failed")
    failed = failed.model_copy(update={"error": "every node refused"})
    hub.final = failed
    assert run(["cds", "lookup", EXAMPLE, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"study_id": 7, "status": "failed",
                                                   "error": "every node refused"}


def test_the_presets_are_listed(capsys: Any) -> None:
    assert run(["cds", "treatments", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {k: list(v) for k, v in PRESETS.items()}


def test_study_results_shows_a_lookup_as_tables(monkeypatch: pytest.MonkeyPatch,
                                                capsys: Any) -> None:
    from healthspace.cli import study

    class Reader:
        def __enter__(self) -> Reader:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def study(self, study_id: int) -> StudyView:
            return view("completed", RESULT)

    monkeypatch.setattr(study, "client", lambda hub, token: Reader())
    assert run(["study", "results", "7"]) == 0
    text = capsys.readouterr().out
    assert "study 7 similar_patients: completed" in text and "what followed" in text
