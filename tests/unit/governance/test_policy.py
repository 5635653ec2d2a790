"""Usage policy model and loading: defaults, validation, YAML/JSON, errors that name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from healthspace.core.errors import InvalidInput
from healthspace.governance.policy import (
    DEFAULT_APPROVAL,
    MIN_CELL_FLOOR,
    ApprovalMode,
    ConsentTier,
    Level,
    Purpose,
    UsagePolicy,
    load_policy,
)

FULL_YAML = """
dataset: cdm
version: 3
level: L3
allowed_purposes: [research, drug_development]
allowed_analyses: [cohort_count]
min_cell_size: 20
approval_mode: two_level
approval_ttl_days: 30
valid_from: 2025-01-01T00:00:00Z
valid_until: 2026-01-01T00:00:00Z
consumer_allow: [acme-pharma, alice]
consumer_deny: [mallory]
rate_limit_per_day: 5
consent_default_tier: withheld
dp_budget: {epsilon: 3.0}
prices: {per_study: 100}
sla: {approval_hours: 48}
"""


def error_for(source: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        load_policy(source)  # type: ignore[arg-type]
    return info.value


def test_defaults() -> None:
    p = UsagePolicy()
    assert p.dataset == "cdm" and p.version == 1 and p.level == Level.L2
    assert p.allowed_purposes == [Purpose.RESEARCH, Purpose.PUBLIC_HEALTH]
    assert p.allowed_analyses is None
    assert p.min_cell_size == 10
    assert p.approval_mode is None and p.effective_approval == ApprovalMode.SINGLE
    assert p.approval_ttl_days == 14
    assert p.valid_from is None and p.valid_until is None
    assert p.consumer_allow is None and p.consumer_deny == []
    assert p.rate_limit_per_day is None
    assert p.consent_default_tier == ConsentTier.OPEN
    assert p.dp_budget is None and p.prices is None and p.sla is None


@pytest.mark.parametrize(
    ("level", "mode"),
    [(Level.L1, ApprovalMode.AUTO), (Level.L2, ApprovalMode.SINGLE),
     (Level.L3, ApprovalMode.TWO_LEVEL)],
)
def test_level_defaults_and_override(level: Level, mode: ApprovalMode) -> None:
    assert DEFAULT_APPROVAL[level] == mode
    assert UsagePolicy(level=level).effective_approval == mode
    for explicit in ApprovalMode:
        assert UsagePolicy(level=level, approval_mode=explicit).effective_approval == explicit


def test_full_yaml_and_json_agree(tmp_path: Path) -> None:
    from_yaml = load_policy(FULL_YAML)
    assert from_yaml.level == Level.L3 and from_yaml.min_cell_size == 20
    assert from_yaml.valid_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert from_yaml.dp_budget == {"epsilon": 3.0}  # reserved fields are accepted and carried
    as_json = from_yaml.model_dump_json()
    assert load_policy(as_json) == from_yaml
    assert load_policy(json.loads(as_json)) == from_yaml
    for name, text in (("p.yaml", FULL_YAML), ("p.yml", FULL_YAML), ("p.json", as_json)):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert load_policy(tmp_path / name) == from_yaml
        assert load_policy(str(tmp_path / name)) == from_yaml
    assert load_policy(from_yaml) is from_yaml


def test_empty_document_takes_every_default(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    assert load_policy(tmp_path / "empty.yaml") == UsagePolicy()
    assert load_policy({}) == UsagePolicy()


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"allowed_purposes": ["research", "marketing"]}, "policy.allowed_purposes[1]"),
        ("allowed_purposes: [research, marketing]", "policy.allowed_purposes[1]"),
        ({"alowed_purposes": ["research"]}, "policy.alowed_purposes"),
        ({"level": "L4"}, "policy.level"),
        ({"min_cell_size": MIN_CELL_FLOOR - 1}, "policy.min_cell_size"),
        ({"approval_mode": "three_level"}, "policy.approval_mode"),
        ({"approval_ttl_days": 0}, "policy.approval_ttl_days"),
        ({"rate_limit_per_day": 0}, "policy.rate_limit_per_day"),
        ({"consent_default_tier": "sometimes"}, "policy.consent_default_tier"),
        ({"version": 0}, "policy.version"),
        ({"dataset": ""}, "policy.dataset"),
        ({"allowed_purposes": []}, "policy"),
        ({"allowed_purposes": ["research", "research"]}, "policy.allowed_purposes"),
        ({"allowed_analyses": ["cohort_count", "cohort_count"]}, "policy.allowed_analyses"),
        ({"valid_from": "2025-02-01", "valid_until": "2025-01-01"}, "policy"),
        ({"valid_from": "2025-01-01", "valid_until": "2025-01-01"}, "policy"),
        ("[1, 2]", "policy"),
        ("level: [unclosed", "policy"),
    ],
)
def test_errors_name_the_field(source: object, field: str) -> None:
    assert error_for(source).field == field


def test_min_cell_floor_is_accepted() -> None:
    assert UsagePolicy(min_cell_size=MIN_CELL_FLOOR).min_cell_size == 5


def test_duplicate_message_names_the_value() -> None:
    err = error_for({"allowed_purposes": ["research", "public_health", "research"]})
    assert "'research'" in err.message and "index 2" in err.message


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    err = error_for(tmp_path / "nope.yaml")
    assert err.field == "policy" and "nope.yaml" in err.message
    assert error_for(str(tmp_path / "nope.json")).field == "policy"


def test_naive_times_are_utc_and_mix_with_aware() -> None:
    p = load_policy({"valid_from": "2025-01-01T00:00:00",
                     "valid_until": "2025-06-01T08:00:00+08:00"})
    assert p.valid_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert p.valid_from is not None and p.valid_from.tzinfo is not None
    assert p.valid_until == datetime(2025, 6, 1, tzinfo=UTC)


def test_yaml_dates_mean_midnight_utc() -> None:
    p = load_policy("valid_from: 2025-01-01\nvalid_until: 2026-01-01")
    assert p.valid_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert p.valid_until == datetime(2026, 1, 1, tzinfo=UTC)


def test_policy_is_frozen() -> None:
    with pytest.raises(ValueError):
        UsagePolicy().min_cell_size = 5
