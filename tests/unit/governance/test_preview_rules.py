"""The preview class in the policy and the engine: typed rules, level defaults, no approvals."""

from datetime import UTC, datetime

import pytest

from healthspace.core.errors import InvalidInput
from healthspace.governance.engine import (
    Approval,
    ApprovalStep,
    DecisionContext,
    StudyRequest,
    decide,
)
from healthspace.governance.policy import load_policy, preview_params

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def request(preview=True, analysis="cohort_count", **kw):
    return StudyRequest(analysis=analysis, purpose=kw.pop("purpose", "research"),
                        consumer="ana", consumer_org="pharma", submitted_at=NOW,
                        preview=preview, **kw)


def test_level_defaults_and_validation():
    assert load_policy({"level": "L1"}).preview_rules.mode == "obfuscated"
    assert load_policy({}).preview_rules.per_hour == 60
    assert load_policy({"level": "L3"}).preview_rules.mode == "off"
    dp = load_policy({"previews": {"mode": "dp", "epsilon": 0.1}, "dp_budget": {"epsilon": 2}})
    assert dp.previews == {"mode": "dp", "epsilon": 0.1}  # carried as written (JSON-able)
    assert dp.preview_rules.epsilon == 0.1
    for bad in ({"previews": {"mode": "dp"}, "dp_budget": {"epsilon": 2}},
                {"previews": {"mode": "obfuscated", "epsilon": 1}},
                {"previews": {"mode": "dp", "epsilon": 0.1}},  # no dp_budget
                {"previews": {"per_hour": 0}},
                {"previews": {"mode": "exact"}},
                {"previews": {"colour": "red"}}):
        with pytest.raises(InvalidInput) as info:
            load_policy(bad)
        assert info.value.field is not None and info.value.field.startswith("policy.previews")


def test_a_preview_skips_approvals_but_not_denials():
    l3 = load_policy({"level": "L3", "previews": {"mode": "obfuscated"}})
    allowed = decide(request(), l3, DecisionContext(now=NOW))
    assert allowed.allowed and allowed.codes == ["preview_auto"] and allowed.missing_steps == []
    assert decide(request(preview=False), l3, DecisionContext(now=NOW)).needs_approval
    denied = decide(request(purpose="commercial_insurance"), l3, DecisionContext(now=NOW))
    assert denied.denied and denied.codes == ["purpose_not_allowed"]
    rejected = Approval(step=ApprovalStep.STEWARD, approved=False, by="sam", at=NOW)
    assert decide(request(), l3, DecisionContext(now=NOW, approvals=[rejected])).denied


def test_previews_off_other_analyses_and_the_hourly_limit():
    off = decide(request(), load_policy({"level": "L3"}), DecisionContext(now=NOW))
    assert off.denied and off.reasons[0].field == "previews"
    glm = decide(request(analysis="glm"), load_policy({}), DecisionContext(now=NOW))
    assert glm.denied and glm.codes == ["preview_not_allowed"]
    policy = load_policy({"level": "L1", "rate_limit_per_day": 1,
                          "previews": {"per_hour": 3}})
    ok = decide(request(), policy, DecisionContext(now=NOW, studies_today=5,
                                                   previews_last_hour=2))
    assert ok.allowed  # the daily study limit does not apply to previews
    limited = decide(request(), policy, DecisionContext(now=NOW, previews_last_hour=3))
    assert limited.codes == ["rate_limited"]
    assert limited.reasons[0].message == "3 previews in the last hour; the limit is 3 an hour"


def test_preview_params_force_the_release_mode():
    asked = {"obfuscate": False, "dp_epsilon": None, "distinct": True, "breakdown": True}
    forced = preview_params(load_policy({}), asked)
    assert forced == {"obfuscate": True, "dp_epsilon": None, "distinct": False,
                      "breakdown": False}
    dp = load_policy({"previews": {"mode": "dp", "epsilon": 0.2}, "dp_budget": {"epsilon": 1}})
    assert preview_params(dp, {"obfuscate": True})["dp_epsilon"] == 0.2
    with pytest.raises(ValueError, match="previews.mode: off"):
        preview_params(load_policy({"level": "L3"}), {})
