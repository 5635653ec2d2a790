"""Policy engine table tests: every policy field, every default, every reason code."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from healthspace.governance.engine import (
    ALLOW_CODES,
    APPROVAL_CODES,
    DENY_CODES,
    REASON_CODES,
    Approval,
    ApprovalStep,
    Decision,
    DecisionContext,
    Outcome,
    Reason,
    StudyRequest,
    approval_steps,
    decide,
)
from healthspace.governance.policy import ApprovalMode, Level, Purpose, UsagePolicy

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[3] / "docs" / "policies.md"

ALLOW, NEEDS, DENY = Outcome.ALLOW, Outcome.NEEDS_APPROVAL, Outcome.DENY
STEWARD, ETHICS = ApprovalStep.STEWARD, ApprovalStep.ETHICS


def steward(approved: bool = True, comment: str | None = None) -> Approval:
    return Approval(step=STEWARD, approved=approved, by="steward1", at=NOW, comment=comment)


def ethics(approved: bool = True, ref: str | None = "IRB-2025-017") -> Approval:
    return Approval(step=ETHICS, approved=approved, by="irb", at=NOW, ethics_ref=ref)


def run(
    policy: dict[str, Any] | None = None,
    approvals: list[Approval] | None = None,
    now: datetime = NOW,
    studies_today: int = 0,
    previews_last_hour: int = 0,
    **study: Any,
) -> Decision:
    fields: dict[str, Any] = {"analysis": "cohort_count", "purpose": "research",
                              "consumer": "alice", "consumer_org": "acme-pharma",
                              "submitted_at": NOW}
    fields.update(study)
    ctx = DecisionContext(now=now, studies_today=studies_today, approvals=approvals or [],
                          previews_last_hour=previews_last_hour)
    return decide(StudyRequest(**fields), UsagePolicy(**(policy or {})), ctx)


L1 = {"level": "L1"}  # auto: isolates the deny checks from approvals
T0 = datetime(2025, 6, 1, tzinfo=UTC)
T1 = datetime(2025, 7, 1, tzinfo=UTC)

CASES = [
    # --- level and approval-mode defaults ---------------------------------------------
    pytest.param({}, {}, NEEDS, ["approval_required"], id="default-L2-single-needs-steward"),
    pytest.param({}, {"approvals": [steward()]}, ALLOW, ["approved"], id="default-L2-steward-ok"),
    pytest.param(L1, {}, ALLOW, ["auto_approved"], id="L1-auto"),
    pytest.param({"level": "L3"}, {}, NEEDS, ["approval_required", "ethics_approval_required"],
                 id="L3-two-level-needs-both"),
    pytest.param({"level": "L3"}, {"approvals": [steward(), ethics()]}, ALLOW, ["approved"],
                 id="L3-both-approved"),
    pytest.param({"level": "L3"}, {"approvals": [steward()]}, NEEDS,
                 ["ethics_approval_required"], id="L3-steward-only"),
    pytest.param({"level": "L3"}, {"approvals": [ethics()]}, NEEDS, ["approval_required"],
                 id="L3-ethics-only"),
    pytest.param({"level": "L3", "approval_mode": "auto"}, {}, ALLOW, ["auto_approved"],
                 id="explicit-auto-overrides-L3"),
    pytest.param({"level": "L1", "approval_mode": "two_level"}, {"approvals": [steward()]},
                 NEEDS, ["ethics_approval_required"], id="explicit-two-level-overrides-L1"),
    pytest.param({"level": "L1", "approval_mode": "single"}, {}, NEEDS, ["approval_required"],
                 id="explicit-single-overrides-L1"),
    pytest.param({}, {"approvals": [ethics()]}, NEEDS, ["approval_required"],
                 id="single-ethics-does-not-replace-steward"),
    pytest.param({"level": "L3"}, {"approvals": [steward(), ethics(ref=None)]}, NEEDS,
                 ["ethics_reference_missing", "ethics_approval_required"],
                 id="ethics-without-reference"),
    # --- approvals ------------------------------------------------------------------
    pytest.param({}, {"approvals": [steward(False, "not our data")]}, DENY,
                 ["approval_rejected", "approval_required"], id="steward-rejected"),
    pytest.param({"level": "L3"}, {"approvals": [steward(), ethics(approved=False, ref=None)]},
                 DENY, ["approval_rejected", "ethics_approval_required"], id="ethics-rejected"),
    pytest.param(L1, {"approvals": [steward(False)]}, DENY, ["approval_rejected"],
                 id="rejection-denies-even-when-auto"),
    pytest.param({}, {"approvals": [steward(False), steward()]}, DENY,
                 ["approval_rejected"], id="a-rejection-is-final"),
    # --- previews (docs/governance.md#previews) ------------------------------------------
    pytest.param({"level": "L3", "previews": {"mode": "obfuscated"}}, {"preview": True}, ALLOW,
                 ["preview_auto"], id="preview-skips-L3-approvals"),
    pytest.param({"level": "L3"}, {"preview": True}, DENY, ["preview_not_allowed"],
                 id="previews-off-by-default-on-L3"),
    pytest.param(L1, {"preview": True, "analysis": "glm"}, DENY, ["preview_not_allowed"],
                 id="preview-is-cohort-count-only"),
    pytest.param(L1, {"preview": True, "previews_last_hour": 60}, DENY, ["rate_limited"],
                 id="preview-hourly-limit"),
    pytest.param({**L1, "rate_limit_per_day": 1}, {"preview": True, "studies_today": 1}, ALLOW,
                 ["preview_auto"], id="preview-ignores-daily-limit"),
    # --- purposes ---------------------------------------------------------------------
    pytest.param(L1, {"purpose": "public_health"}, ALLOW, ["auto_approved"],
                 id="default-purposes-public-health"),
    pytest.param(L1, {"purpose": "drug_development"}, DENY, ["purpose_not_allowed"],
                 id="default-purposes-exclude-drug-development"),
    pytest.param(L1, {"purpose": "marketing"}, DENY, ["purpose_not_allowed"],
                 id="unknown-purpose"),
    pytest.param(L1, {"purpose": "RESEARCH"}, DENY, ["purpose_not_allowed"],
                 id="purpose-is-case-sensitive"),
    pytest.param({**L1, "allowed_purposes": ["commercial_insurance"]},
                 {"purpose": "commercial_insurance"}, ALLOW, ["auto_approved"],
                 id="explicit-purposes"),
    pytest.param({**L1, "allowed_purposes": ["commercial_insurance"]}, {}, DENY,
                 ["purpose_not_allowed"], id="explicit-purposes-exclude-research"),
    # --- analyses ---------------------------------------------------------------------
    pytest.param(L1, {"analysis": "anything_vetted"}, ALLOW, ["auto_approved"],
                 id="analyses-null-means-all"),
    pytest.param({**L1, "allowed_analyses": ["cohort_count"]}, {}, ALLOW, ["auto_approved"],
                 id="analysis-listed"),
    pytest.param({**L1, "allowed_analyses": ["cohort_count"]}, {"analysis": "cox"}, DENY,
                 ["analysis_not_allowed"], id="analysis-not-listed"),
    pytest.param({**L1, "allowed_analyses": []}, {}, DENY, ["analysis_not_allowed"],
                 id="analyses-empty-means-none"),
    # --- validity window: start inclusive, end exclusive ----------------------------
    pytest.param({**L1, "valid_from": T0, "valid_until": T1}, {"now": T0}, ALLOW,
                 ["auto_approved"], id="valid-from-inclusive"),
    pytest.param({**L1, "valid_from": T0}, {"now": T0 - timedelta(microseconds=1)}, DENY,
                 ["policy_not_yet_valid"], id="before-valid-from"),
    pytest.param({**L1, "valid_until": T1}, {"now": T1 - timedelta(microseconds=1)}, ALLOW,
                 ["auto_approved"], id="just-before-valid-until"),
    pytest.param({**L1, "valid_until": T1}, {"now": T1}, DENY, ["policy_expired"],
                 id="valid-until-exclusive"),
    pytest.param({**L1, "valid_until": datetime(2025, 7, 1)}, {"now": T1}, DENY,
                 ["policy_expired"], id="naive-policy-time-is-utc"),
    pytest.param({**L1, "valid_until": T1}, {"now": datetime(2025, 7, 1)}, DENY,
                 ["policy_expired"], id="naive-now-is-utc"),
    pytest.param({**L1, "valid_until": T1},
                 {"now": datetime(2025, 7, 1, 7, 59, tzinfo=timezone(timedelta(hours=8)))},
                 ALLOW, ["auto_approved"], id="offset-now-compared-as-instant"),
    # --- consumers ------------------------------------------------------------------
    pytest.param({**L1, "consumer_allow": ["alice"]}, {}, ALLOW, ["auto_approved"],
                 id="allow-list-by-user"),
    pytest.param({**L1, "consumer_allow": ["acme-pharma"]}, {"consumer": "bob"}, ALLOW,
                 ["auto_approved"], id="allow-list-by-org"),
    pytest.param({**L1, "consumer_allow": ["other-org"]}, {}, DENY, ["consumer_not_allowed"],
                 id="not-on-allow-list"),
    pytest.param({**L1, "consumer_allow": [""]}, {"consumer_org": ""}, DENY,
                 ["consumer_not_allowed"], id="empty-org-never-matches"),
    pytest.param({**L1, "consumer_deny": ["alice"]}, {}, DENY, ["consumer_denied"],
                 id="deny-list-by-user"),
    pytest.param({**L1, "consumer_deny": ["acme-pharma"]}, {}, DENY, ["consumer_denied"],
                 id="deny-list-by-org"),
    pytest.param({**L1, "consumer_allow": ["alice"], "consumer_deny": ["acme-pharma"]}, {},
                 DENY, ["consumer_denied"], id="deny-list-wins-over-allow-list"),
    pytest.param({**L1, "consumer_deny": ["mallory"]}, {}, ALLOW, ["auto_approved"],
                 id="deny-list-others-pass"),
    # --- rate limit -----------------------------------------------------------------
    pytest.param({**L1, "rate_limit_per_day": 3}, {"studies_today": 2}, ALLOW,
                 ["auto_approved"], id="rate-limit-minus-one-allowed"),
    pytest.param({**L1, "rate_limit_per_day": 3}, {"studies_today": 3}, DENY, ["rate_limited"],
                 id="rate-limit-reached"),
    pytest.param(L1, {"studies_today": 10_000}, ALLOW, ["auto_approved"],
                 id="no-rate-limit-by-default"),
    # --- everything wrong at once: all reasons, deny reasons first ------------------
    pytest.param(
        {"level": "L3", "allowed_analyses": ["cohort_count"], "valid_until": T0,
         "consumer_deny": ["alice"], "rate_limit_per_day": 1},
        {"purpose": "payer_policy", "analysis": "glm", "studies_today": 1,
         "approvals": [steward(False)]},
        DENY,
        ["purpose_not_allowed", "analysis_not_allowed", "policy_expired", "consumer_denied",
         "rate_limited", "approval_rejected", "approval_required", "ethics_approval_required"],
        id="multiple-deny-reasons-all-reported",
    ),
    pytest.param({**L1, "valid_from": T1, "consumer_allow": ["x"]}, {}, DENY,
                 ["policy_not_yet_valid", "consumer_not_allowed"], id="not-yet-valid-and-allow"),
    # --- prices, service levels and budgets do not change the decision -------------
    pytest.param({**L1, "dp_budget": {"epsilon": 1.0}, "prices": {"per_study": 10},
                  "sla": {"approval_hours": 24}, "approval_ttl_days": 7, "dataset": "cdm2"},
                 {}, ALLOW, ["auto_approved"], id="pricing-fields-accepted"),
]


@pytest.mark.parametrize(("policy", "args", "outcome", "codes"), CASES)
def test_decide(policy: dict[str, Any], args: dict[str, Any], outcome: Outcome,
                codes: list[str]) -> None:
    decision = run(policy, **args)
    assert decision.outcome == outcome
    assert decision.codes == codes
    # deny reasons come first, and the outcome matches the codes
    kinds = [c in DENY_CODES for c in decision.codes]
    assert kinds == sorted(kinds, reverse=True)
    assert decision.denied == any(kinds)
    assert decision.allowed == (outcome == ALLOW)
    assert decision.needs_approval == (outcome == NEEDS)
    if outcome == ALLOW:
        assert decision.missing_steps == []
        assert decision.codes[0] in ALLOW_CODES
    for reason in decision.reasons:
        assert reason.message and reason.field in UsagePolicy.model_fields


def test_decision_carries_effective_mode_cell_size_and_version() -> None:
    d = run({"level": "L3", "min_cell_size": 25, "version": 7})
    assert d.approval_mode == ApprovalMode.TWO_LEVEL
    assert d.min_cell_size == 25 and d.policy_version == 7
    assert d.missing_steps == [STEWARD, ETHICS]
    assert run().min_cell_size == 10  # the default
    assert run().approval_mode == ApprovalMode.SINGLE


def test_reason_fields_name_the_deciding_policy_field() -> None:
    d = run({**L1, "allowed_purposes": ["research"], "rate_limit_per_day": 1},
            purpose="public_health", studies_today=1)
    assert [(r.code, r.field) for r in d.reasons] == [
        ("purpose_not_allowed", "allowed_purposes"), ("rate_limited", "rate_limit_per_day")]


def test_two_level_steward_only_misses_ethics() -> None:
    d = run({"level": "L3"}, approvals=[steward()])
    assert d.outcome == NEEDS and d.missing_steps == [ETHICS]


def test_ethics_without_reference_does_not_count() -> None:
    for ref in (None, "", "   "):
        assert not ethics(ref=ref).counts
        d = run({"level": "L3"}, approvals=[steward(), ethics(ref=ref)])
        assert d.outcome == NEEDS and d.missing_steps == [ETHICS]
        assert d.codes == ["ethics_reference_missing", "ethics_approval_required"]
    # one good ethics approval is enough, even beside one without a reference
    d = run({"level": "L3"}, approvals=[steward(), ethics(ref=None), ethics()])
    assert d.allowed and d.codes == ["approved"]
    # only an approved ethics step needs a reference; a steward approval never does
    assert ethics().counts and steward().counts and not ethics(approved=False, ref=None).counts


def test_decide_is_pure_and_deterministic() -> None:
    policy = UsagePolicy(level=Level.L3, consumer_deny=["x"])
    study = StudyRequest(analysis="a", purpose="research", consumer="alice",
                         consumer_org="o", submitted_at=NOW)
    ctx = DecisionContext(now=NOW, approvals=[steward()])
    first = decide(study, policy, ctx)
    assert all(decide(study, policy, ctx) == first for _ in range(3))
    assert policy == UsagePolicy(level=Level.L3, consumer_deny=["x"])
    assert ctx.approvals == [steward()]


def test_approval_steps() -> None:
    assert approval_steps(ApprovalMode.AUTO) == []
    assert approval_steps(ApprovalMode.SINGLE) == [STEWARD]
    assert approval_steps(ApprovalMode.TWO_LEVEL) == [STEWARD, ETHICS]


def test_every_purpose_can_be_allowed() -> None:
    for purpose in Purpose:
        d = run({**L1, "allowed_purposes": [purpose]}, purpose=str(purpose))
        assert d.allowed, purpose


def test_reason_codes_are_a_closed_set() -> None:
    assert REASON_CODES == DENY_CODES | APPROVAL_CODES | ALLOW_CODES
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", c) for c in REASON_CODES)
    with pytest.raises(ValidationError):
        Reason(code="because", message="no")
    with pytest.raises(ValidationError):
        Reason(code="approved", message="ok", extra=1)  # type: ignore[call-arg]


def test_every_reason_code_is_reached_by_a_case() -> None:
    reached = {c for case in CASES for c in cast(list[str], case.values[3])}
    assert reached == REASON_CODES


def test_every_reason_code_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for code in REASON_CODES:
        assert f"`{code}`" in text, code


def test_context_validation() -> None:
    with pytest.raises(ValidationError):
        DecisionContext(now=NOW, studies_today=-1)
    with pytest.raises(ValidationError):
        StudyRequest(analysis="a", purpose="research", consumer="c", consumer_org="o",
                     submitted_at=NOW, cohort={})  # type: ignore[call-arg]


def test_decision_round_trips_as_json() -> None:
    d = run({"level": "L3"}, approvals=[steward()])
    assert Decision.model_validate_json(d.model_dump_json()) == d
