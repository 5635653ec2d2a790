"""Lookup files: the profile file and the command line's additions become exactly the
``similar_patients`` study expected; every mistake is an error naming its field."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from healthspace.analyses.similar_lookup import (
    bin_labels,
    index_cohort,
    survival_at,
    time_points,
)
from healthspace.analyses.similar_params import SimilarParams
from healthspace.client.lookup import (
    PRESETS,
    build_spec,
    load_lookup,
    lookup_spec,
    parse_outcome,
    parse_request,
    parse_treatment,
    run_lookup,
)
from healthspace.core.errors import InvalidInput
from healthspace.core.models import StudySpec, StudyView

EXAMPLE = Path(str(resources.files("healthspace.examples").joinpath("cds_profile_t2d.json")))
PROFILE = {"age": 62, "sex": "M", "conditions": ["ICD10:E11.9", "ICD10:I10"],
           "labs": {"LOINC:4548-4": 8.4}, "drugs": ["ATC:A10BA02"]}


def write(tmp_path: Path, data: dict[str, Any], name: str = "profile.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def problem(call: Any, *args: Any, **kw: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        call(*args, **kw)
    return info.value


def test_the_worked_example_is_the_study_expected() -> None:
    spec = lookup_spec(EXAMPLE)
    assert (spec.analysis, spec.purpose, spec.nodes) == ("similar_patients", "clinical_care",
                                                         None)
    params = SimilarParams.model_validate(spec.params)  # what the hub will validate
    assert params.profile.labs == {"LOINC:4548-4": 8.4, "LOINC:33914-3": 55.0}
    assert [(t.name, t.codes, t.window_days) for t in params.treatments] == [
        ("insulin", ["ATC:A10AB%"], 180), ("sulfonylurea", ["ATC:A10BB%"], 180)]
    assert [(o.name, o.codes, o.death, o.horizon_days) for o in params.outcomes] == [
        ("ckd", ["ICD10:N18%", "ICD10:E11.21", "ICD10:E11.22"], False, 365),
        ("death", [], True, 730)]
    assert params.km_name() == "ckd" and params.k == 200
    assert spec.cohort == index_cohort(["ICD10:E11%"])
    assert spec.cohort["entry"] == {"condition": {"codes": ["ICD10:E11%"]}}
    assert spec.cohort["inclusion"] == [{"observation_period": {"min_prior_observation_days": 0}}]
    assert spec.title is not None and spec.title.startswith("Similar patients: T2D")


def test_defaults_pool_from_the_first_condition_and_death_within_a_year() -> None:
    spec = build_spec(parse_request({"profile": PROFILE}))
    assert spec.cohort is not None
    assert spec.cohort["entry"]["condition"]["codes"] == ["ICD10:E11%"]
    assert spec.params["outcomes"] == [{"name": "death", "codes": [], "death": True,
                                        "horizon_days": 365}]
    assert spec.params["treatments"] == [] and "k" not in spec.params
    assert spec.title == "Similar-patient lookup: age 62, M, ICD10:E11.9, ICD10:I10"
    only_i10 = {**PROFILE, "conditions": ["ICD10:I10"]}
    assert build_spec(parse_request({"profile": only_i10})).cohort["entry"] == {  # type: ignore[index]
        "condition": {"codes": ["ICD10:I10%"]}}


def test_an_inline_cohort_is_passed_as_given(tmp_path: Path) -> None:
    cohort = {"entry": {"drug": {"codes": ["ATC:A10BA02"]}}, "inclusion": [{"age": {"min": 40}}]}
    assert build_spec(parse_request({"profile": PROFILE, "cohort": cohort})).cohort == cohort
    (tmp_path / "pool.json").write_text(json.dumps(cohort))
    path = write(tmp_path, {"profile": PROFILE, "cohort_path": "pool.json"})
    assert lookup_spec(path).cohort == cohort


def test_the_command_line_adds_presets_and_own_treatments_and_replaces_outcomes_k_nodes(
) -> None:
    spec = lookup_spec(EXAMPLE, presets=["statin"], treatments=["glp1=ATC:A10BJ%,ATC:A10BX@60"],
                       outcomes=["ckd_or_death=ICD10:N18%,death@400", "death"], k=50,
                       nodes=["hospital_1", "hospital_2"])
    params = SimilarParams.model_validate(spec.params)
    assert [t.name for t in params.treatments] == ["insulin", "sulfonylurea", "statin", "glp1"]
    assert params.treatments[2].codes == list(PRESETS["statin"])
    assert (params.treatments[3].codes, params.treatments[3].window_days) == (
        ["ATC:A10BJ%", "ATC:A10BX"], 60)
    assert [(o.name, o.codes, o.death, o.horizon_days) for o in params.outcomes] == [
        ("ckd_or_death", ["ICD10:N18%"], True, 400), ("death", [], True, 365)]
    assert (params.k, spec.nodes) == (50, ["hospital_1", "hospital_2"])
    # the file's km_outcome (ckd) is no longer an outcome: the curves follow the first
    assert "km_outcome" not in spec.params and params.km_name() == "ckd_or_death"
    kept = lookup_spec(EXAMPLE, outcomes=["death@365", "ckd=ICD10:N18%"])
    assert kept.params["km_outcome"] == "ckd"


@pytest.mark.parametrize(("text", "expected"), [
    ("insulin=ATC:A10AB%", ("insulin", ["ATC:A10AB%"], 90)),
    (" su = ATC:A10BB09 , ATC:A10BB01 @ 30 ", ("su", ["ATC:A10BB09", "ATC:A10BB01"], 30)),
    ("pci=ICD10PCS:027034Z@0", ("pci", ["ICD10PCS:027034Z"], 0)),
])
def test_treatment_options_parse(text: str, expected: tuple[str, list[str], int]) -> None:
    t = parse_treatment(text)
    assert (t.name, t.codes, t.window_days) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("insulin", "names no codes"), ("insulin=", "names no codes"),
    ("insulin=A10AB", "VOCAB:CODE"), ("insulin=ATC:A10AB@soon", "whole number"),
    ("insulin=ATC:A10AB@9999", "3650"), ("1nsulin=ATC:A10AB", "starting with a letter"),
])
def test_bad_treatment_options_name_the_option(text: str, words: str) -> None:
    exc = problem(parse_treatment, text, "--treatment")
    assert exc.field == "--treatment" and words in exc.message and repr(text) in exc.message


def test_outcome_options_parse_and_need_codes_or_death() -> None:
    death = parse_outcome("death@730")
    assert (death.name, death.codes, death.death, death.horizon_days) == ("death", [], True, 730)
    ckd = parse_outcome("ckd=ICD10:N18%,ICD10:E11.22")
    assert (ckd.codes, ckd.death, ckd.horizon_days) == (["ICD10:N18%", "ICD10:E11.22"], False,
                                                       365)
    assert "needs codes" in problem(parse_outcome, "ckd@365", "--outcome").message


def test_unknown_presets_and_repeated_names_are_refused() -> None:
    exc = problem(lookup_spec, EXAMPLE, presets=["insulin"])
    assert exc.field == "treatments" and "insulin is given twice" in exc.message
    exc = problem(lookup_spec, EXAMPLE, presets=["aspirin", "magic"])
    assert exc.field == "treatments" and "'magic'" in exc.message and "metformin" in exc.message


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"profile": {**PROFILE, "age": 200}}, "profile.age", "130"),
    ({"profile": {**PROFILE, "conditions": ["ICD10:E11%"]}}, "profile.conditions", "wildcard"),
    ({"profile": {**PROFILE, "labs": {"HbA1c": 8.4}}}, "profile.labs", "VOCAB:CODE"),
    ({"profile": PROFILE, "k": 3}, "k", "10"),
    ({"profile": PROFILE, "nodes": ["a", "a"]}, "nodes", "repeat"),
    ({"profile": PROFILE, "nodes": []}, "nodes", "empty"),
    ({"profile": PROFILE, "index": ["E11"]}, "index", "VOCAB:CODE"),
    ({"profile": PROFILE, "index": ["ICD10:E11%"], "cohort": {"entry": {}}}, "cohort",
     "alternative candidate pools"),
    ({"profile": PROFILE, "treatment": []}, "treatment", "Extra inputs"),
    ({"profile": PROFILE, "outcomes": [{"name": "x"}]}, "outcomes[0]", "needs codes"),
    ({"age": 62}, "profile", "Field required"),
])
def test_bad_files_name_the_field(tmp_path: Path, data: dict[str, Any], field: str,
                                  words: str) -> None:
    exc = problem(load_lookup, write(tmp_path, data))
    assert exc.field is not None and exc.field.startswith(field), exc
    assert words in exc.message, exc


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"profile": PROFILE, "km_outcome": "stroke"}, "km_outcome", "not one of the outcomes"),
    ({"profile": PROFILE, "treatments": [{"name": "a", "codes": ["ATC:X"]},
                                         {"name": "a", "codes": ["ATC:Y"]}]},
     "treatments", "must not repeat"),
    ({"profile": PROFILE, "similarity": {"numeric": {"LOINC:33914-3": 1}}}, "similarity",
     "lack"),
    ({"profile": {"age": 62}}, "index", "no condition"),
    ({"profile": PROFILE, "cohort": {"entry": {"condition": {"codes": ["E11"]}}}},
     "cohort.entry.condition.codes", "VOCAB:CODE"),
])
def test_inconsistent_requests_name_the_field(data: dict[str, Any], field: str,
                                              words: str) -> None:
    exc = problem(build_spec, parse_request(data))
    assert exc.field == field and words in exc.message, exc


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    exc = problem(load_lookup, tmp_path / "nowhere.json")
    assert "does not exist" in exc.message and exc.field == "profile file"
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "mapping" in problem(load_lookup, tmp_path / "list.json").message
    (tmp_path / "broken.json").write_text("{profile: [")
    assert problem(load_lookup, tmp_path / "broken.json").field
    both = write(tmp_path, {"profile": PROFILE, "cohort": {}, "cohort_path": "x.json"})
    assert problem(load_lookup, both).field == "cohort_path"


def test_a_registry_pool_is_passed_through_when_the_spec_knows_registries() -> None:
    request = parse_request({"profile": PROFILE, "registry": "t2d-registry"})
    if "registry" in StudySpec.model_fields:
        spec = build_spec(request)
        assert getattr(spec, "registry") == "t2d-registry" and spec.cohort is None
    else:
        assert problem(build_spec, request).field == "registry"
    assert problem(parse_request, {"profile": PROFILE, "registry": "a b"}).field == "registry"
    if "registry" in StudySpec.model_fields:  # the spec's own rule for registry names
        upper = parse_request({"profile": PROFILE, "registry": "T2D"})
        assert problem(build_spec, upper).field == "registry"


class FakeHub:
    """Answers submit and wait like the hub: the study completes with ``result``."""

    def __init__(self, result: dict[str, Any] | None, status: str = "completed") -> None:
        self.result, self.status, self.submitted = result, status, []

    def view(self, status: str, result: dict[str, Any] | None = None) -> StudyView:
        return StudyView.model_validate({
            "id": 7, "analysis": "similar_patients", "params": {}, "purpose": "clinical_care",
            "nodes": ["hospital_1"], "status": status, "round": 2, "submitted_by": "alice",
            "created_at": "2025-03-01T09:00:00Z", "updated_at": "2025-03-01T09:00:00Z",
            "result": result})

    def submit(self, spec: StudySpec) -> StudyView:
        self.submitted.append(spec)
        return self.view("running")

    def wait(self, study_id: int, timeout: float = 600.0, on_update: Any = None) -> StudyView:
        view = self.view(self.status, self.result)
        if on_update:
            on_update(view)
        return view


def test_run_lookup_submits_the_file_study_and_waits() -> None:
    hub = FakeHub({"matched": 20})
    seen: list[str] = []
    view = run_lookup(hub, EXAMPLE, on_update=lambda v: seen.append(v.status.value))  # type: ignore[arg-type]
    assert hub.submitted == [lookup_spec(EXAMPLE)]
    assert view.result == {"matched": 20} and seen == ["completed"]


def test_the_result_readers() -> None:
    assert bin_labels([0, 0.25, 1, 6, None]) == ["0–0.25", "0.25–1", "1–6", "≥ 6"]
    km = {"timeline": [0, 30, 200, 400], "survival": [1.0, 0.9, 0.8, 0.7]}
    assert [survival_at(km, d) for d in (0, 29, 30, 365, 400, 401)] == [
        1.0, 1.0, 0.9, 0.8, 0.7, None]
    groups = [{"km": km}, {"km": None}, {"km": {"timeline": [0, 800], "survival": [1, 0.5]}}]
    assert time_points(groups) == [90, 180, 365, 730]
    assert time_points([{"km": km}], most=2) == [180, 365] and time_points([{}]) == []
