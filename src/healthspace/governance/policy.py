"""Usage policies: one per dataset, ODRL-inspired, authored by the data holder.

The node's policy file is authoritative; the hub keeps the node's signed, published copy for
pre-checks. The decision logic lives in :mod:`healthspace.governance.engine`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from healthspace.core.documents import load_document
from healthspace.core.errors import InvalidInput, invalid_from_validation
from healthspace.core.limits import DEFAULT_MIN_CELL, MIN_CELL_FLOOR
from healthspace.governance.pricing import Prices, ServiceLevels


class Level(StrEnum):
    """Classification level of a dataset."""

    L1 = "L1"  # public / aggregate
    L2 = "L2"  # internal
    L3 = "L3"  # sensitive


class Purpose(StrEnum):
    RESEARCH = "research"
    PUBLIC_HEALTH = "public_health"
    DRUG_DEVELOPMENT = "drug_development"
    PAYER_POLICY = "payer_policy"
    COMMERCIAL_INSURANCE = "commercial_insurance"
    CLINICAL_CARE = "clinical_care"


class ApprovalMode(StrEnum):
    AUTO = "auto"
    SINGLE = "single"  # one data-steward approval
    TWO_LEVEL = "two_level"  # data-steward approval plus an ethics-committee (IRB) reference


class ConsentTier(StrEnum):
    OPEN = "open"  # every purpose
    RESEARCH_ONLY = "research_only"  # research and public_health only
    WITHHELD = "withheld"  # none


class DpBudget(BaseModel):
    """The ε a consumer (organisation) may spend on this dataset, in total or per period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon_per_consumer: float = Field(
        gt=0, le=1000, validation_alias=AliasChoices("epsilon_per_consumer", "epsilon"))
    period: Literal["none", "month", "year"] = Field(
        default="none", description="the budget renews every UTC calendar month or year")


class PreviewPolicy(BaseModel):
    """How this dataset answers interactive feasibility previews (the console's live count).

    Previews are ``cohort_count`` studies released only obfuscated or with DP noise, admitted
    without approvals and rate-limited per consumer organisation (docs/governance.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["obfuscated", "dp", "off"] = "obfuscated"
    epsilon: float | None = Field(
        default=None, gt=0, le=10, description="ε per preview (mode dp); charged to dp_budget")
    per_hour: int = Field(default=60, ge=1, le=10_000,
                          description="previews per consumer organisation per rolling hour")

    @model_validator(mode="after")
    def _epsilon_iff_dp(self) -> PreviewPolicy:
        if self.mode == "dp" and self.epsilon is None:
            raise ValueError("mode dp needs epsilon (the ε each preview spends)")
        if self.mode != "dp" and self.epsilon is not None:
            raise ValueError("epsilon applies to mode dp only")
        return self


# Level defaults when a policy sets no ``previews``: sensitive (L3) data holders opt in.
DEFAULT_PREVIEWS = {Level.L1: PreviewPolicy(), Level.L2: PreviewPolicy(),
                    Level.L3: PreviewPolicy(mode="off")}

DEFAULT_APPROVAL = {Level.L1: ApprovalMode.AUTO, Level.L2: ApprovalMode.SINGLE,
                    Level.L3: ApprovalMode.TWO_LEVEL}


class UsagePolicy(BaseModel):
    """A dataset's usage policy. Unknown keys are errors; omitted keys take documented defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(default="cdm", min_length=1, max_length=64)
    version: int = Field(default=1, ge=1, description="bumped by the data holder on change")
    level: Level = Level.L2
    allowed_purposes: list[Purpose] = Field(
        default_factory=lambda: [Purpose.RESEARCH, Purpose.PUBLIC_HEALTH],
        description="purposes a study may declare",
    )
    allowed_analyses: list[str] | None = Field(
        default=None, description="catalogue analyses allowed; null = every vetted analysis"
    )
    min_cell_size: int = Field(default=DEFAULT_MIN_CELL, ge=MIN_CELL_FLOOR)
    approval_mode: ApprovalMode | None = Field(
        default=None, description="null = the level's default: L1 auto, L2 single, L3 two_level"
    )
    approval_ttl_days: int = Field(default=14, ge=1, le=365,
                                   description="pending approvals expire after this")
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    consumer_allow: list[str] | None = Field(
        default=None, description="consumer user or organisation names; null = anyone"
    )
    consumer_deny: list[str] = Field(default_factory=list)
    rate_limit_per_day: int | None = Field(default=None, ge=1,
                                           description="studies per consumer per UTC day")
    consent_default_tier: ConsentTier = ConsentTier.OPEN
    dp_budget: dict[str, Any] | None = Field(
        default=None, description="ε budget (DpBudget); null = differentially private tasks "
                                  "are refused on the node")
    differencing: Literal["refuse", "off"] = Field(
        default="refuse", description="refuse an exact count whose cohort differs from one "
                                      "already released to the same consumer by fewer than "
                                      "min_cell_size persons (healthspace.node.differencing)")
    differencing_retention_days: int = Field(
        default=365, ge=1, le=3650, description="days the node remembers released cohorts")
    count_release: Literal["exact", "obfuscated"] = Field(
        default="exact", description="obfuscated: every cohort count from this dataset is "
                                     "SHRINE-style obfuscated (binned, clamped noise, '≤ N'), "
                                     "whatever the study asks; DP counts stay DP")
    previews: dict[str, Any] | None = Field(
        default=None, description="feasibility previews (PreviewPolicy); null = the level's "
                                  "default: L1/L2 obfuscated, 60 an hour; L3 off")
    secure_aggregation: bool | None = Field(
        default=None, description="mask summable partials so the hub learns only network sums "
                                  "(docs/secure-aggregation.md); null = the level's default: "
                                  "on for L3, off otherwise")
    release_site_counts: bool | None = Field(
        default=None, description="under secure aggregation, may this node's own released "
                                  "count appear in results; null = no for L3, yes otherwise")
    prices: dict[str, Any] | None = Field(
        default=None, description="what a study of this dataset costs (governance.pricing."
                                  "Prices); null = free")
    sla: dict[str, Any] | None = Field(
        default=None, description="service-level targets (governance.pricing.ServiceLevels): "
                                  "approval_hours, result_minutes; null = none")
    model_release: Literal["none", "deploy", "download"] = Field(
        default="deploy", description="models trained on this dataset: none = weights never "
                                      "leave the hub's registry; deploy = they may be sent to "
                                      "nodes to score their own patients; download = the "
                                      "training consumer may also download them")

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # A naive time means UTC; mixing naive and aware would make comparisons raise.
        return as_utc(value) if value is not None else None

    @field_validator("dp_budget")
    @classmethod
    def _dp_budget(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Validated here, carried as written (so the published copy matches the file).
        if value is not None:
            DpBudget.model_validate(value)
        return value

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            Prices.model_validate(value)
        return value

    @field_validator("sla")
    @classmethod
    def _sla(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            ServiceLevels.model_validate(value)
        return value

    @field_validator("previews")
    @classmethod
    def _previews(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        # Validated here, carried as written (like dp_budget).
        if value is not None:
            rules = PreviewPolicy.model_validate(value)
            if rules.mode == "dp" and info.data.get("dp_budget", {}) is None:
                raise ValueError("mode dp spends the ε budget: set dp_budget too")
        return value

    @property
    def preview_rules(self) -> PreviewPolicy:
        """The typed preview rules: the policy's own, else the level's default."""
        if self.previews is None:
            return DEFAULT_PREVIEWS[self.level]
        return PreviewPolicy.model_validate(self.previews)

    @property
    def price_list(self) -> Prices | None:
        """The typed prices, or None when the dataset is free."""
        return None if self.prices is None else Prices.model_validate(self.prices)

    @property
    def service_levels(self) -> ServiceLevels:
        return ServiceLevels.model_validate(self.sla or {})

    @property
    def budget(self) -> DpBudget | None:
        """The typed ε budget, or None when the policy sets none."""
        return None if self.dp_budget is None else DpBudget.model_validate(self.dp_budget)

    @field_validator("allowed_purposes", "allowed_analyses")
    @classmethod
    def _no_duplicates(cls, value: list[Any] | None) -> list[Any] | None:
        seen: set[str] = set()
        for i, item in enumerate(value or []):
            if str(item) in seen:
                raise ValueError(f"duplicate entry {str(item)!r} at index {i}")
            seen.add(str(item))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UsagePolicy:
        if self.valid_from and self.valid_until and self.valid_from >= self.valid_until:
            raise ValueError("valid_from must be before valid_until")
        if not self.allowed_purposes:
            raise ValueError("allowed_purposes must not be empty")
        return self

    @property
    def effective_approval(self) -> ApprovalMode:
        return self.approval_mode or DEFAULT_APPROVAL[self.level]


def as_utc(value: datetime) -> datetime:
    """The same instant as a timezone-aware UTC datetime; a naive value is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def load_policy(source: str | Path | dict[str, Any] | UsagePolicy) -> UsagePolicy:
    """Parse a usage policy from a dict, JSON/YAML text or a .json/.yaml/.yml file path.

    Errors are :class:`InvalidInput` naming the offending field, e.g. ``policy.min_cell_size``.
    """
    if isinstance(source, UsagePolicy):
        return source
    data = load_document(source, "policy")
    if data is None:
        data = {}  # an empty file: every field takes its default
    if not isinstance(data, dict):
        raise InvalidInput("a usage policy must be an object", field="policy")
    try:
        return UsagePolicy.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc, prefix=("policy",)) from exc


def secure_required(policy: UsagePolicy) -> bool:
    """Whether this dataset's summable partials must be securely aggregated."""
    if policy.secure_aggregation is not None:
        return policy.secure_aggregation
    return policy.level == Level.L3


def site_counts_released(policy: UsagePolicy) -> bool:
    """Whether, under secure aggregation, this node's own released count may be shown."""
    if policy.release_site_counts is not None:
        return policy.release_site_counts
    return policy.level != Level.L3


def release_params(policy: UsagePolicy, analysis: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a node actually runs with under its policy's release rules.

    With ``count_release: obfuscated`` every exact ``cohort_count`` becomes an obfuscated one
    (a DP request stays DP: it is noised already). Raises ValueError for a request the rule
    cannot honour (a de-duplicated count needs exact counts).
    """
    if analysis != "cohort_count" or policy.count_release != "obfuscated":
        return params
    if params.get("dp_epsilon") is not None:
        return params
    if params.get("distinct"):
        raise ValueError("this dataset releases obfuscated counts only; a de-duplicated "
                         "(distinct) count needs exact counts")
    return {**params, "obfuscate": True}


def preview_params(policy: UsagePolicy, params: dict[str, Any]) -> dict[str, Any]:
    """The ``cohort_count`` parameters a preview runs with: the count only, never exact.

    The node's preview mode decides, whatever the study asked: ``obfuscated`` → SHRINE-style
    obfuscation; ``dp`` → the policy's ε per preview. Raises ValueError when previews are off.
    """
    rules = policy.preview_rules
    if rules.mode == "off":
        raise ValueError("this dataset does not answer previews (previews.mode: off)")
    forced: dict[str, Any] = {"breakdown": False, "distinct": False}
    if rules.mode == "dp":
        forced.update(dp_epsilon=rules.epsilon, obfuscate=False)
    else:
        forced.update(dp_epsilon=None, obfuscate=True)
    return {**params, **forced}


RELEASE_ORDER = ("none", "deploy", "download")


def strictest_release(values: list[str]) -> str:
    """The most restrictive ``model_release`` of the contributing datasets."""
    return min(values, key=RELEASE_ORDER.index) if values else "none"
