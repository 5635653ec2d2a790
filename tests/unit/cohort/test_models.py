"""Cohort definition models: what is accepted, and errors that name the offending field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthspace.cohort.models import MAX_CODES, CohortDefinition, load_cohort
from healthspace.core.errors import InvalidInput

EXAMPLE = """
{"entry": {"condition": {"codes": ["ICD10:E11%"]}},
 "inclusion": [
   {"age": {"min": 40, "max": 75}},
   {"sex": "F"},
   {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gt": 7.0}, "window": [-365, 0]}},
   {"drug": {"codes": ["ATC:A10BA02"], "window": [-365, 0], "occurrences": {"min": 2}}},
   {"any": [{"condition": {"codes": ["ICD10:I10"]}}, {"drug": {"codes": ["ATC:C10AA%"]}}]}],
 "exclusion": [{"condition": {"codes": ["ICD10:C%"], "window": [null, 0]}}]}
"""

ENTRY = {"condition": {"codes": ["ICD10:E11%"]}}


def error_for(definition: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        load_cohort(definition)
    return info.value


def test_example_is_accepted_with_defaults() -> None:
    d = load_cohort(EXAMPLE)
    assert d.entry.kind == "condition" and d.entry.spec.codes == ["ICD10:E11%"]
    kinds = [c.kind for c in d.inclusion]
    assert kinds == ["age", "sex", "measurement", "drug", "any"]
    hba1c = d.inclusion[2].measurement
    assert hba1c is not None and hba1c.value is not None
    assert hba1c.value.ops() == [("gt", 7.0)] and hba1c.window == (-365, 0)
    assert hba1c.occurrences.min == 1
    drug = d.inclusion[3].drug
    assert drug is not None and drug.occurrences.min == 2
    group = d.inclusion[4].any
    assert group is not None and [c.kind for c in group] == ["condition", "drug"]
    assert group[0].condition is not None and group[0].condition.window == (None, None)
    cancer = d.exclusion[0].condition
    assert cancer is not None and cancer.window == (None, 0)


def test_roundtrip_through_json_is_stable() -> None:
    d = load_cohort(EXAMPLE)
    again = load_cohort(d.model_dump(mode="json", exclude_none=True))
    assert again == d


def test_unknown_key_is_rejected_naming_the_path() -> None:
    bad = json.loads(EXAMPLE)
    bad["inclusion"][2]["measurement"]["windw"] = [0, 1]
    err = error_for(bad)
    assert err.field == "cohort.inclusion[2].measurement.windw"
    assert error_for({"entry": ENTRY, "inclusoin": []}).field == "cohort.inclusoin"
    assert (
        error_for({"entry": ENTRY, "inclusion": [{"sexx": "F"}]}).field
        == "cohort.inclusion[0].sexx"
    )


def test_bad_value_names_the_nested_field() -> None:
    bad = json.loads(EXAMPLE)
    bad["inclusion"][2]["measurement"]["value"]["gt"] = "high"
    assert error_for(bad).field == "cohort.inclusion[2].measurement.value.gt"


def test_two_keys_in_one_criterion_are_rejected() -> None:
    crit = {"condition": {"codes": ["ICD10:I10"]}, "drug": {"codes": ["ATC:A10BA02"]}}
    err = error_for({"entry": ENTRY, "exclusion": [crit]})
    assert err.field == "cohort.exclusion[0]" and "condition, drug" in err.message
    entry = {"condition": {"codes": ["ICD10:I10"]}, "visit": {"codes": ["Visit:IP"]}}
    assert error_for({"entry": entry}).field == "cohort.entry"


@pytest.mark.parametrize(
    ("criterion", "field"),
    [
        ({}, "cohort.inclusion[0]"),
        ({"sex": None}, "cohort.inclusion[0]"),
        ({"sex": "X"}, "cohort.inclusion[0].sex"),
        ({"any": []}, "cohort.inclusion[0].any"),
        ({"age": {"min": 80, "max": 40}}, "cohort.inclusion[0].age"),
        ({"age": {"min": -1}}, "cohort.inclusion[0].age.min"),
        ({"drug": {}}, "cohort.inclusion[0].drug"),
        (
            {"drug": {"codes": ["ATC:A10"], "occurrences": {"min": 0}}},
            "cohort.inclusion[0].drug.occurrences.min",
        ),
        ({"measurement": {"codes": ["L:1"], "value": {}}}, "cohort.inclusion[0].measurement.value"),
        (
            {"observation_period": {"min_prior_observation_days": -1}},
            "cohort.inclusion[0].observation_period.min_prior_observation_days",
        ),
        (
            {"any": [{"sex": "F"}, {"drug": {"codes": ["bad"]}}]},
            "cohort.inclusion[0].any[1].drug.codes",
        ),
    ],
)
def test_invalid_criteria_name_their_field(criterion: dict[str, Any], field: str) -> None:
    assert error_for({"entry": ENTRY, "inclusion": [criterion]}).field == field


@pytest.mark.parametrize(
    "code", ["E11", ":E11", "ICD10:", "IC$D10:E11", "ICD10:E\n11", "ICD10:" + "9" * 101]
)
def test_bad_code_format_is_rejected(code: str) -> None:
    err = error_for({"entry": {"condition": {"codes": ["ICD10:I10", code]}}})
    assert err.field == "cohort.entry.condition.codes"


def test_code_may_contain_colons_and_spaces_in_vocabulary() -> None:
    d = load_cohort({"entry": {"condition": {"codes": ["OMOP Extension:OMOP5:1", "A:B_1%"]}}})
    assert d.entry.spec.codes == ["OMOP Extension:OMOP5:1", "A:B_1%"]


def test_window_start_after_end_is_rejected() -> None:
    crit = {"drug": {"codes": ["ATC:A10BA02"], "window": [10, -10]}}
    err = error_for({"entry": ENTRY, "inclusion": [crit]})
    assert err.field == "cohort.inclusion[0].drug.window" and "after" in err.message
    assert load_cohort(
        {"entry": ENTRY, "inclusion": [{"drug": {"codes": ["A:1"], "window": [5, 5]}}]}
    )
    assert error_for({"entry": ENTRY, "inclusion": [{"drug": {"codes": ["A:1"], "window": [1]}}]})


def test_value_only_on_measurement() -> None:
    crit = {"condition": {"codes": ["ICD10:I10"], "value": {"gt": 1}}}
    err = error_for({"entry": ENTRY, "inclusion": [crit]})
    assert err.field == "cohort.inclusion[0].condition.value" and "measurement" in err.message
    entry = {"drug": {"codes": ["ATC:A10BA02"], "value": {"gt": 1}}}
    assert error_for({"entry": entry}).field == "cohort.entry.drug.value"
    ok = {"measurement": {"codes": ["LOINC:4548-4"], "value": {"gt": 1}}}
    assert load_cohort({"entry": ok}).entry.spec.value is not None


def test_entry_takes_no_window_or_occurrences() -> None:
    for extra in ({"window": [0, 1]}, {"occurrences": {"min": 2}}):
        entry = {"condition": {"codes": ["ICD10:E11%"], **extra}}
        assert error_for({"entry": entry}).field == f"cohort.entry.condition.{next(iter(extra))}"
    assert error_for({"inclusion": []}).field == "cohort.entry"
    assert error_for({"entry": {"sex": "F"}}).field == "cohort.entry.sex"


def test_size_limits() -> None:
    many = [f"ICD10:X{i}" for i in range(MAX_CODES + 1)]
    assert (
        error_for({"entry": {"condition": {"codes": many}}}).field == "cohort.entry.condition.codes"
    )
    crit: dict[str, Any] = {"sex": "F"}
    for _ in range(5):
        crit = {"any": [crit]}
    assert load_cohort({"entry": ENTRY, "inclusion": [crit]})  # depth 5 is fine
    err = error_for({"entry": ENTRY, "exclusion": [{"any": [crit]}]})
    assert err.field == "cohort.exclusion" and "exclusion[0].any[0]" in err.message


def test_json_and_yaml_files_text_and_dicts_load_alike(tmp_path: Path) -> None:
    expected = load_cohort(EXAMPLE)
    as_dict = json.loads(EXAMPLE)
    (tmp_path / "c.json").write_text(EXAMPLE)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(as_dict))
    (tmp_path / "c.yml").write_text(yaml.safe_dump(as_dict))
    for source in (
        as_dict,
        EXAMPLE,
        yaml.safe_dump(as_dict),
        tmp_path / "c.json",
        str(tmp_path / "c.yaml"),
        tmp_path / "c.yml",
    ):
        assert load_cohort(source) == expected
    assert load_cohort(expected) is expected


def test_yaml_with_comments_and_null_window() -> None:
    text = """
    # feasibility
    name: t2d
    entry:
      condition: {codes: ["ICD10:E11%"]}
    exclusion:
      - condition:
          codes: ["ICD10:C%"]
          window: [~, 0]
    """
    d = load_cohort(text)
    assert d.name == "t2d" and d.exclusion[0].condition is not None
    assert d.exclusion[0].condition.window == (None, 0)


def test_unparseable_or_missing_sources_are_invalid_input(tmp_path: Path) -> None:
    assert error_for("entry: [unclosed").field == "cohort"
    assert error_for(tmp_path / "missing.json").field == "cohort"
    assert error_for("[1, 2]").field == "cohort"
    (tmp_path / "bad.yaml").write_text("entry:\n  condition: {codes: [nope]}\n")
    assert error_for(tmp_path / "bad.yaml").field == "cohort.entry.condition.codes"


def test_models_are_immutable() -> None:
    d = load_cohort(EXAMPLE)
    with pytest.raises(ValueError):
        d.name = "changed"  # type: ignore[misc]
    assert isinstance(CohortDefinition.model_json_schema(), dict)
