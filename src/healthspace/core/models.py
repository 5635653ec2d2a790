"""Pydantic wire models exchanged between consumers, the hub and nodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from healthspace.core.enums import OrgKind, PrincipalKind, Role, StudyStatus, TaskStatus
from healthspace.core.limits import DEFAULT_MIN_CELL, MIN_CELL_FLOOR
from healthspace.privacy.secagg_keys import Prekey

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class Wire(BaseModel):
    """Base for every external payload: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- identity and administration -------------------------------------------------


class OrgCreate(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    kind: OrgKind
    display_name: str | None = Field(default=None, max_length=200)


class OrgView(Wire):
    id: int
    name: str
    kind: OrgKind
    display_name: str | None = None
    created_at: datetime


class UserCreate(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    org: str = Field(pattern=NAME_PATTERN, description="organisation name")
    role: Role


class UserView(Wire):
    id: int
    name: str
    org: str
    role: Role
    created_at: datetime


class TokenIssue(Wire):
    user: str = Field(pattern=NAME_PATTERN)
    label: str | None = Field(default=None, max_length=100)


class TokenView(Wire):
    """A freshly issued token: the secret is shown once and stored only as a hash."""

    token: str
    principal: str
    kind: PrincipalKind


class NodeEnroll(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    org: str = Field(pattern=NAME_PATTERN)
    public_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the node's Ed25519 public key (hex) from 'node init'; registered at enrolment",
    )


class NodeEnrolled(Wire):
    id: int
    name: str
    org: str
    token: str
    created: bool = Field(description="false when the node was already enrolled (token rotated)")


class Catalog(Wire):
    """What a node publishes about its dataset: shape only, never rows."""

    cdm_version: str = "5.4"
    tables: dict[str, int] = Field(
        default_factory=dict, description="table -> record count rounded to 100"
    )
    vocabularies: dict[str, list[str]] = Field(
        default_factory=dict, description="vocabulary_id -> concept codes present"
    )
    public_key: str | None = Field(default=None, description="node Ed25519 public key, hex")
    software_version: str | None = None
    consent_tiers: dict[str, int | str] | None = Field(
        default=None,
        description="consent tier -> persons, rounded to 10 and disclosure-controlled",
    )
    quality: dict[str, Any] | None = Field(
        default=None, description="the data-quality summary (healthspace.cdm.quality): "
                                  "scores, failed checks, rates in percent; never rows")


class NodeView(Wire):
    id: int
    name: str
    org: str
    org_kind: OrgKind
    enrolled_at: datetime
    last_seen_at: datetime | None = None
    public_key: str | None = None
    catalog: Catalog | None = None
    prices: dict[str, Any] | None = Field(
        default=None, description="the dataset's published prices (docs/metering.md#prices)")
    sla: dict[str, Any] | None = Field(
        default=None, description="the dataset's published service-level targets")


class Me(Wire):
    id: int
    name: str
    kind: PrincipalKind
    role: Role | None = None
    org: str


# --- studies ----------------------------------------------------------------------

REGISTRY_NAME_PATTERN = r"^[a-z][a-z0-9_\-]{0,62}$"


class RegistryRef(Wire):
    """Which version of a specialty-disease registry (docs/registries.md) a study targets:
    its cohort and dataset are that version's, ``digest`` binds them."""

    name: str = Field(pattern=REGISTRY_NAME_PATTERN)
    version: int = Field(ge=1)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$",
                        description="SHA-256 of the canonical JSON {cohort, dataset}")


class StudySpec(Wire):
    """What a consumer submits. ``cohort`` is validated by ``healthspace.cohort``."""

    analysis: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    cohort: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = Field(
        default=None,
        description="analysis-dataset spec (docs/analysis-datasets.md): the cohort as one row "
        "per person, built on each node for table analyses (glm, km, cox, summary)",
    )
    registry: str | None = Field(
        default=None, pattern=REGISTRY_NAME_PATTERN, description="a registry's name instead "
        "of cohort and dataset: the hub uses its current version (docs/registries.md)")
    purpose: str = Field(default="research", min_length=1, max_length=64)
    nodes: list[str] | None = Field(
        default=None, description="node names; default: every hospital node that holds data"
    )
    title: str | None = Field(default=None, max_length=200)
    preview: bool = Field(
        default=False, description="an interactive feasibility preview: a cohort_count "
        "released obfuscated or DP-noised only, admitted without approvals, rate-limited")
    secure_aggregation: bool = Field(
        default=False, description="mask the nodes' summable partials so the hub learns only "
        "network sums; on anyway when a node's policy requires it (L3 by default)")
    round_timeout_seconds: int | None = Field(
        default=None, ge=5, le=7 * 86400, description="a node that has not answered a round "
        "this long after it was queued is dropped from the study (its task fails); the "
        "others go on. null: wait for every node")

    @model_validator(mode="after")
    def _unique_nodes(self) -> StudySpec:
        if self.nodes is not None:
            if not self.nodes:
                raise ValueError("nodes must not be empty when given")
            if len(set(self.nodes)) != len(self.nodes):
                raise ValueError("nodes must not repeat")
        return self


class TaskView(Wire):
    node: str
    round: int
    status: TaskStatus
    error: str | None = None
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0


class TimelineEvent(Wire):
    """One timestamped step of a study: submitted, policy_checked, approval, started, …"""

    at: datetime
    event: str
    node: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Feedback(Wire):
    """The submitter's rating of a finished study."""

    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=2000)
    by: str | None = None
    at: datetime | None = None


class StudyView(Wire):
    id: int
    title: str | None = None
    analysis: str
    params: dict[str, Any]
    cohort: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    registry: RegistryRef | None = Field(
        default=None, description="the registry version the study targeted, if it did")
    purpose: str
    nodes: list[str]
    preview: bool = False
    secure_aggregation: bool = False
    status: StudyStatus
    round: int
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    result: dict[str, Any] | None = None
    delivered: dict[str, Any] | None = Field(
        default=None, description="results addressed to your organisation only, by node "
        "(e.g. a hospital's own case-mix position); payer organisations see every node's")
    error: str | None = None
    tasks: list[TaskView] = Field(default_factory=list)
    timeline: list[TimelineEvent] = Field(default_factory=list)
    feedback: Feedback | None = None
    decisions: dict[str, Any] = Field(
        default_factory=dict, description="node -> the hub's policy decision and approval state"
    )
    cost: StudyCost | None = None
    round_timeout_seconds: int | None = None


class StudyCost(Wire):
    """What a study may cost (reserved against the quota) and, once settled, what it cost."""

    estimate: float | None = Field(default=None, description="the most it may cost")
    invoiced: float | None = Field(default=None, description="its settled charge")
    currency: str | None = None
    settled_at: datetime | None = None


class StudyList(Wire):
    studies: list[StudyView]


# --- node <-> hub -----------------------------------------------------------------


class RosterEntry(Wire):
    """One node of a secure-aggregation session: its signed one-time key and its node key."""

    prekey: Prekey
    node_key: str = Field(pattern=r"^[0-9a-f]{64}$",
                          description="the node's Ed25519 key as the hub registered it")


class SecureRound(Wire):
    """The session a task's partial is masked for; the roster is fixed for the session."""

    session_id: str = Field(min_length=1, max_length=200)
    roster: list[RosterEntry] = Field(min_length=2)


class TaskAssignment(Wire):
    """One unit of work handed to a node: run ``analysis.local`` for one round."""

    task_id: int
    study_id: int
    round: int
    analysis: str
    params: dict[str, Any]
    cohort: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    registry: RegistryRef | None = Field(
        default=None, description="the registry version the cohort and dataset come from: "
        "a node whose materialisation matches reads its rows instead of compiling them")
    round_input: dict[str, Any] | None = None
    purpose: str
    min_cell_size: int = Field(default=DEFAULT_MIN_CELL, ge=MIN_CELL_FLOOR)
    consumer: str
    consumer_org: str = ""
    submitted_at: datetime | None = None
    approvals: list[dict[str, Any]] = Field(
        default_factory=list, description="governance.engine.Approval records for this node"
    )
    policy_version: int | None = Field(
        default=None, description="version of the node policy the hub pre-checked against"
    )
    preview: bool = Field(
        default=False, description="a feasibility preview: the node forces its preview "
        "release mode (obfuscated or DP) and requires no approvals")
    secure: SecureRound | None = Field(
        default=None, description="secure aggregation: mask the summable partial for this "
        "session's roster (docs/secure-aggregation.md)")
    hub_signature: str | None = Field(
        default=None, description="hub Ed25519 signature over every other field (hex)"
    )


class TaskMetrics(Wire):
    records: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)
    bytes: int = Field(default=0, ge=0)


class TaskResult(Wire):
    """A node's answer for one task; posting it twice is harmless (idempotent)."""

    status: Literal[TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.REFUSED]
    partial: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=4000)
    metrics: TaskMetrics = Field(default_factory=TaskMetrics)

    @model_validator(mode="after")
    def _partial_iff_completed(self) -> TaskResult:
        if self.status == TaskStatus.COMPLETED and self.partial is None:
            raise ValueError("a completed task must carry a partial")
        if self.status != TaskStatus.COMPLETED and not self.error:
            raise ValueError("a failed or refused task must carry an error")
        return self


class TaskAck(Wire):
    task_id: int
    accepted: bool
    duplicate: bool = False
