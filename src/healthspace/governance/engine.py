"""The pure policy engine: decide(study, policy, context) -> allow | needs_approval | deny."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from healthspace.governance.policy import ApprovalMode, Purpose, UsagePolicy, as_utc


class Outcome(StrEnum):
    ALLOW = "allow"
    NEEDS_APPROVAL = "needs_approval"
    DENY = "deny"


# Outcomes under which a node takes part in a study (now, or once approved).
ADMITTED = (Outcome.ALLOW, Outcome.NEEDS_APPROVAL)

# Codes that make the outcome ``deny``; any one of them is enough.
DENY_CODES = frozenset({
    "purpose_not_allowed",
    "analysis_not_allowed",
    "policy_not_yet_valid",
    "policy_expired",
    "consumer_denied",
    "consumer_not_allowed",
    "rate_limited",
    "approval_rejected",
    "preview_not_allowed",
})
# Codes that say how far approval has got (needs_approval, or context on a deny).
APPROVAL_CODES = frozenset({
    "approval_required",
    "ethics_approval_required",
    "ethics_reference_missing",
})
# Codes that explain an ``allow``.
ALLOW_CODES = frozenset({"auto_approved", "approved", "preview_auto"})
PREVIEW_ANALYSIS = "cohort_count"  # the only analysis a preview may run
REASON_CODES = DENY_CODES | APPROVAL_CODES | ALLOW_CODES


class Reason(BaseModel):
    """Why the engine decided as it did: a stable code, a message for people, the policy field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    message: str
    field: str | None = None

    @field_validator("code")
    @classmethod
    def _known(cls, code: str) -> str:
        if code not in REASON_CODES:
            raise ValueError(f"unknown reason code {code!r}")
        return code


class ApprovalStep(StrEnum):
    STEWARD = "steward"  # the data holder's data steward
    ETHICS = "ethics"  # an ethics committee (IRB) decision, cited by reference


class Approval(BaseModel):
    """One approver's decision on one study for one dataset.

    An approved ethics step needs a non-empty ``ethics_ref``. The engine enforces that (the
    approval does not count, reason ``ethics_reference_missing``) rather than the model, so a
    stored record without one yields a clear reason instead of a validation crash.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: ApprovalStep
    approved: bool
    by: str = Field(min_length=1)
    at: datetime
    comment: str | None = None
    ethics_ref: str | None = None

    @property
    def counts(self) -> bool:
        """Whether this approval satisfies its step (an ethics approval must cite a reference)."""
        return self.approved and (self.step != ApprovalStep.ETHICS or _has_ref(self))


class StudyRequest(BaseModel):
    """What the engine needs to know about a study."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    analysis: str
    purpose: str
    consumer: str
    consumer_org: str
    submitted_at: datetime
    preview: bool = Field(default=False, description="an interactive feasibility preview: "
                          "admitted without approvals under the policy's previews rules")


class DecisionContext(BaseModel):
    """Facts from outside the study and the policy; the caller supplies them, so decide is pure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    now: datetime
    studies_today: int = Field(default=0, ge=0)
    previews_last_hour: int = Field(
        default=0, ge=0, description="the consumer organisation's previews admitted for this "
                                     "dataset in the past hour, not counting this one")
    approvals: list[Approval] = Field(default_factory=list)


class Decision(BaseModel):
    """The engine's answer with every reason (deny reasons first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outcome: Outcome
    reasons: list[Reason]
    approval_mode: ApprovalMode
    min_cell_size: int
    policy_version: int
    missing_steps: list[ApprovalStep] = Field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.outcome == Outcome.ALLOW

    @property
    def denied(self) -> bool:
        return self.outcome == Outcome.DENY

    @property
    def needs_approval(self) -> bool:
        return self.outcome == Outcome.NEEDS_APPROVAL

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]


def approval_steps(mode: ApprovalMode) -> list[ApprovalStep]:
    """The approvals a mode requires, in the order they are usually given."""
    return {
        ApprovalMode.AUTO: [],
        ApprovalMode.SINGLE: [ApprovalStep.STEWARD],
        ApprovalMode.TWO_LEVEL: [ApprovalStep.STEWARD, ApprovalStep.ETHICS],
    }[ApprovalMode(mode)]


def decide(study: StudyRequest, policy: UsagePolicy, ctx: DecisionContext) -> Decision:
    """Decide whether ``study`` may use the dataset governed by ``policy``, and why."""
    if study.preview:
        return _decide_preview(study, policy, ctx)
    mode = policy.effective_approval
    denials = _denials(study, policy, ctx)
    missing, progress = _approval_progress(mode, ctx.approvals)
    if denials:
        outcome, reasons = Outcome.DENY, denials + progress
    elif missing:
        outcome, reasons = Outcome.NEEDS_APPROVAL, progress
    elif mode == ApprovalMode.AUTO:
        outcome = Outcome.ALLOW
        reasons = [Reason(code="auto_approved", field="approval_mode",
                          message=f"level {policy.level} admits studies without approval")]
    else:
        outcome = Outcome.ALLOW
        steps = " and ".join(str(s) for s in approval_steps(mode))
        reasons = [Reason(code="approved", field="approval_mode",
                          message=f"approved ({steps}) as {mode} approval requires")]
    return Decision(
        outcome=outcome,
        reasons=reasons,
        approval_mode=mode,
        min_cell_size=policy.min_cell_size,
        policy_version=policy.version,
        missing_steps=missing,
    )


def _decide_preview(study: StudyRequest, policy: UsagePolicy, ctx: DecisionContext) -> Decision:
    """Previews skip approvals (their counts are never exact) but every deny rule applies;
    the preview rate limit replaces the daily study limit."""
    rules = policy.preview_rules
    # No approval is needed, but a recorded rejection still stands (it is in the denials).
    denials = _denials(study, policy, ctx, daily_limit=False)
    if rules.mode == "off":
        denials.append(Reason(code="preview_not_allowed", field="previews",
                              message="this dataset does not answer previews "
                                      "(previews.mode: off); submit a regular study"))
    if study.analysis != PREVIEW_ANALYSIS:
        denials.append(Reason(code="preview_not_allowed", field="previews",
                              message=f"a preview runs {PREVIEW_ANALYSIS} only, "
                                      f"not {study.analysis!r}"))
    if rules.mode != "off" and ctx.previews_last_hour >= rules.per_hour:
        denials.append(Reason(code="rate_limited", field="previews",
                              message=f"{ctx.previews_last_hour} previews in the last hour; "
                                      f"the limit is {rules.per_hour} an hour"))
    reasons = denials or [Reason(code="preview_auto", field="previews",
                                 message=f"a preview ({rules.mode} count) needs no approval")]
    return Decision(
        outcome=Outcome.DENY if denials else Outcome.ALLOW,
        reasons=reasons,
        approval_mode=ApprovalMode.AUTO,
        min_cell_size=policy.min_cell_size,
        policy_version=policy.version,
    )


def _denials(
    study: StudyRequest, policy: UsagePolicy, ctx: DecisionContext, *, daily_limit: bool = True
) -> list[Reason]:
    out: list[Reason] = []
    if study.purpose not in {str(p) for p in Purpose}:
        out.append(Reason(code="purpose_not_allowed", field="allowed_purposes",
                          message=f"unknown purpose {study.purpose!r}"))
    elif study.purpose not in policy.allowed_purposes:
        allowed = ", ".join(policy.allowed_purposes)
        out.append(Reason(code="purpose_not_allowed", field="allowed_purposes",
                          message=f"purpose {study.purpose!r} is not allowed (allowed: {allowed})"))
    if policy.allowed_analyses is not None and study.analysis not in policy.allowed_analyses:
        out.append(Reason(code="analysis_not_allowed", field="allowed_analyses",
                          message=f"analysis {study.analysis!r} is not allowed by this policy"))
    now = as_utc(ctx.now)
    if policy.valid_from is not None and now < as_utc(policy.valid_from):
        out.append(Reason(code="policy_not_yet_valid", field="valid_from",
                          message=f"the policy takes effect at {as_utc(policy.valid_from)}"))
    if policy.valid_until is not None and now >= as_utc(policy.valid_until):
        out.append(Reason(code="policy_expired", field="valid_until",
                          message=f"the policy expired at {as_utc(policy.valid_until)}"))
    out.extend(_consumer_denials(study, policy))
    limit = policy.rate_limit_per_day
    if daily_limit and limit is not None and ctx.studies_today >= limit:
        out.append(Reason(code="rate_limited", field="rate_limit_per_day",
                          message=f"{ctx.studies_today} studies today; the limit is {limit} a day"))
    for a in ctx.approvals:
        if not a.approved:
            why = f": {a.comment}" if a.comment else ""
            out.append(Reason(code="approval_rejected", field="approval_mode",
                              message=f"{a.step} approval rejected by {a.by}{why}"))
    return out


def _consumer_denials(study: StudyRequest, policy: UsagePolicy) -> list[Reason]:
    # Empty names never match: a missing organisation must not hit an entry by accident.
    names = [n for n in (study.consumer, study.consumer_org) if n]
    denied = [n for n in names if n in policy.consumer_deny]
    if denied:  # the deny-list wins over the allow-list
        return [Reason(code="consumer_denied", field="consumer_deny",
                       message=f"{denied[0]!r} is on this dataset's deny-list")]
    if policy.consumer_allow is not None and not any(n in policy.consumer_allow for n in names):
        return [Reason(code="consumer_not_allowed", field="consumer_allow",
                       message=f"neither {study.consumer!r} nor {study.consumer_org!r} "
                               "is on this dataset's allow-list")]
    return []


def _approval_progress(
    mode: ApprovalMode, approvals: list[Approval]
) -> tuple[list[ApprovalStep], list[Reason]]:
    """The required steps not yet approved, and the reasons that say so."""
    missing: list[ApprovalStep] = []
    reasons: list[Reason] = []
    for step in approval_steps(mode):
        given = [a for a in approvals if a.step == step and a.approved]
        if any(a.counts for a in given):
            continue
        if given:  # approved, but an ethics approval without its committee reference
            reasons.append(Reason(code="ethics_reference_missing", field="approval_mode",
                                  message="the ethics approval cites no committee reference"))
        missing.append(step)
        if step == ApprovalStep.ETHICS:
            reasons.append(Reason(code="ethics_approval_required", field="approval_mode",
                                  message="needs an ethics-committee approval with its reference"))
        else:
            reasons.append(Reason(code="approval_required", field="approval_mode",
                                  message=f"needs the data steward's approval ({mode} approval)"))
    return missing, reasons


def _has_ref(approval: Approval) -> bool:
    return bool(approval.ethics_ref and approval.ethics_ref.strip())
