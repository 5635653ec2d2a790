"""SQLAlchemy models of the hub store: identities, nodes and keys, studies, governance, tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    Select,
    String,
    Text,
    UniqueConstraint,
    false,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, undefer_group

from healthspace.core.dbnaming import NAMING
from healthspace.hub.db.types import UTCDateTime


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Argon2id hash for signing in to the web console by name and password (optional).
    password_hash: Mapped[str | None] = mapped_column(String(200))

    org: Mapped[Organisation] = relationship(lazy="joined")


class ConsoleSession(Base):
    """A web-console sign-in: the cookie's hash, its CSRF token, when it ends."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


NODE_DOCUMENTS = "node_documents"


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    public_key: Mapped[str | None] = mapped_column(String(128))
    # The catalogue and the policy are documents (vocabularies, prices, rules): loaded when
    # read, not with every task, target or meter row that joins its node.
    catalog: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True,
                                                           deferred_group=NODE_DOCUMENTS)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The node's authoritative usage policy as it last published it (signed), for pre-checks.
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True,
                                                          deferred_group=NODE_DOCUMENTS)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    # envelopes.id of that publication; no FK, as envelopes already refer to nodes.
    policy_envelope_id: Mapped[int | None] = mapped_column(Integer)

    org: Mapped[Organisation] = relationship(lazy="joined")


class NodeKey(Base):
    """Every Ed25519 key a node has signed with; retired keys stay so old envelopes verify."""

    __tablename__ = "node_keys"
    __table_args__ = (UniqueConstraint("public_key", name="uq_node_keys_public_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StoredEnvelope(Base):
    """A verified node message, kept whole (signature included) so it can be re-verified."""

    __tablename__ = "envelopes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    study_id: Mapped[int | None] = mapped_column(Integer, index=True)
    round: Mapped[int | None] = mapped_column(Integer)
    nonce: Mapped[str] = mapped_column(String(32), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EnvelopeNonce(Base):
    """Nonces seen within twice the freshness window (older ones are pruned)."""

    __tablename__ = "envelope_nonces"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    node_id: Mapped[int] = mapped_column(Integer)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Token(Base):
    __tablename__ = "tokens"
    __table_args__ = (
        CheckConstraint(
            "(user_id IS NOT NULL AND node_id IS NULL)"
            " OR (user_id IS NULL AND node_id IS NOT NULL)",
            name="one_principal",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str | None] = mapped_column(String(200))
    analysis: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    cohort: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    dataset: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The registry version the study targeted ({name, version, digest}); its cohort and
    # dataset are copied above, so the study reads the same whatever the registry becomes.
    registry_ref: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(64))
    nodes: Mapped[list[str]] = mapped_column(JSON)
    preview: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    secure: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(32), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Results addressed to one node's organisation (and payer organisations): node -> entry.
    deliveries: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    submitted_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The most the study may cost, reserved against the consumer's quota until it settles.
    estimate_cents: Mapped[int | None] = mapped_column(BigInteger)
    # A finished study's service levels have been checked (healthspace.hub.services.sla).
    sla_checked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Tasks still open this long after they were queued fail (the node is dropped).
    round_timeout_seconds: Mapped[int | None] = mapped_column(Integer)

    submitter: Mapped[User] = relationship(lazy="joined")
    # Loaded on access (views ask for them with VIEW_LOADS): the round loop reads a study
    # every round, and a long training study has hundreds of tasks and timeline events.
    tasks: Mapped[list[Task]] = relationship(
        back_populates="study", order_by="(Task.round, Task.id)"
    )
    targets: Mapped[list[StudyNode]] = relationship(order_by="StudyNode.node_id", viewonly=True)
    events: Mapped[list[StudyEvent]] = relationship(
        order_by="(StudyEvent.at, StudyEvent.id)", viewonly=True
    )
    feedback: Mapped[StudyFeedback | None] = relationship(viewonly=True)
    settlement: Mapped[Settlement | None] = relationship(viewonly=True)


class StudyNode(Base):
    """A study's target node and the governance decision for it (policy pre-check, approval).

    ``decision`` is the engine's outcome (allow | needs_approval | deny); ``approval`` tracks
    the human side: pending | approved | rejected | expired | not_required.
    """

    __tablename__ = "study_nodes"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), primary_key=True, index=True)
    decision: Mapped[str | None] = mapped_column(String(16))
    reasons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    approval_mode: Mapped[str | None] = mapped_column(String(16))
    missing_steps: Mapped[list[str] | None] = mapped_column(JSON)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    min_cell_size: Mapped[int | None] = mapped_column(Integer)
    approval: Mapped[str | None] = mapped_column(String(16), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The node policy's prices and service levels when the study was admitted: what the
    # consumer agreed to, and the targets the study is held to (governance.pricing).
    prices: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sla: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    node: Mapped[Node] = relationship(lazy="joined")
    approvals: Mapped[list[StudyApproval]] = relationship(
        order_by="StudyApproval.id",
        lazy="selectin",
        viewonly=True,
        primaryjoin="and_(StudyNode.study_id == foreign(StudyApproval.study_id), "
        "StudyNode.node_id == foreign(StudyApproval.node_id))",
    )


class StudyApproval(Base):
    """One approver's step (approve or reject) on one study for one node."""

    __tablename__ = "study_approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    step: Mapped[str] = mapped_column(String(16))
    approved: Mapped[bool] = mapped_column(Boolean)
    by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    comment: Mapped[str | None] = mapped_column(Text)
    ethics_ref: Mapped[str | None] = mapped_column(String(200))


class StudyEvent(Base):
    """One timestamped step of a study's life (its timeline)."""

    __tablename__ = "study_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    event: Mapped[str] = mapped_column(String(32))
    node: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class StudyFeedback(Base):
    """The submitter's rating of a finished study (at most one)."""

    __tablename__ = "study_feedback"

    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("study_id", "node_id", "round", name="uq_tasks_study_node_round"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), index=True)
    round_input: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    min_cell_size: Mapped[int] = mapped_column(Integer)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The signed envelope that carried this task's result: every answer traces to its node.
    # The partial itself is read from there (stored once: partials can be megabytes).
    envelope_id: Mapped[int | None] = mapped_column(ForeignKey("envelopes.id"))
    # The secure-aggregation session this task's partial is masked for (None: in clear).
    secagg_session_id: Mapped[int | None] = mapped_column(ForeignKey("secagg_sessions.id"))

    study: Mapped[Study] = relationship(back_populates="tasks")
    node: Mapped[Node] = relationship(lazy="joined")
    secagg_session: Mapped[SecaggSession | None] = relationship(lazy="joined")


class SecaggPrekey(Base):
    """A node's signed one-time X25519 key, waiting to be assigned to one session."""

    __tablename__ = "secagg_prekeys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    prekey: Mapped[dict[str, Any]] = mapped_column(JSON)
    node_key: Mapped[str] = mapped_column(String(128))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    session_id: Mapped[int | None] = mapped_column(ForeignKey("secagg_sessions.id"), index=True)


class SecaggSession(Base):
    """One roster of nodes masking for each other; reused across rounds while it holds."""

    __tablename__ = "secagg_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    nodes: Mapped[list[str]] = mapped_column(JSON)
    roster: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class HubKey(Base):
    __tablename__ = "hub_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    private_key: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The rotation statement by which the previous key vouched for this one (None: the first).
    rotation: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class MeterRecord(Base):
    """A node's signed meter of one task (healthspace.core.metering.Meter), stored once."""

    __tablename__ = "meter_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), unique=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    analysis: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(64))
    preview: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(32))
    records_scanned: Mapped[int] = mapped_column(BigInteger)
    persons: Mapped[int] = mapped_column(BigInteger)
    persons_band: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    bytes: Mapped[int] = mapped_column(BigInteger)
    epsilon: Mapped[float] = mapped_column(Float)
    envelope_id: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    node: Mapped[Node] = relationship(lazy="joined")


class BillingAccount(Base):
    """A consumer organisation's prepaid quota and credit limit (absent: no quota check)."""

    __tablename__ = "billing_accounts"

    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    prepaid_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    credit_limit_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    org: Mapped[Organisation] = relationship(lazy="joined")


class Settlement(Base):
    """A finished study's invoice: what its consumer owes, the platform fee, what holders earn."""

    __tablename__ = "settlements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    consumer_org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    period: Mapped[str] = mapped_column(String(7), index=True)
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    currency: Mapped[str] = mapped_column(String(8))
    fee_rate: Mapped[float] = mapped_column(Float)
    invoiced_cents: Mapped[int] = mapped_column(BigInteger)
    fee_cents: Mapped[int] = mapped_column(BigInteger)
    earned_cents: Mapped[int] = mapped_column(BigInteger)

    consumer_org: Mapped[Organisation] = relationship(lazy="joined")


class SettlementLine(Base):
    """One data holder's part of a settlement: its priced usage, fee, earnings and points."""

    __tablename__ = "settlement_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    settlement_id: Mapped[int] = mapped_column(ForeignKey("settlements.id"), index=True)
    study_id: Mapped[int] = mapped_column(Integer, index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    holder_org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    period: Mapped[str] = mapped_column(String(7), index=True)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON)
    lines: Mapped[dict[str, Any]] = mapped_column(JSON)
    rate: Mapped[float] = mapped_column(Float)
    points: Mapped[float] = mapped_column(Float)
    charge_cents: Mapped[int] = mapped_column(BigInteger)
    fee_cents: Mapped[int] = mapped_column(BigInteger)
    earned_cents: Mapped[int] = mapped_column(BigInteger)

    node: Mapped[Node] = relationship(lazy="joined")
    holder_org: Mapped[Organisation] = relationship(lazy="joined")


class SlaBreach(Base):
    """A missed service-level target: a late approval decision or a late result."""

    __tablename__ = "sla_breaches"
    __table_args__ = (
        UniqueConstraint("study_id", "node_id", "kind", name="uq_sla_breaches_study_node_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    kind: Mapped[str] = mapped_column(String(16))
    target_seconds: Mapped[float] = mapped_column(Float)
    actual_seconds: Mapped[float] = mapped_column(Float)
    open: Mapped[bool] = mapped_column(Boolean, default=False,
                                       doc="detected while still waiting (not yet decided)")
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    node: Mapped[Node] = relationship(lazy="joined")


class RegisteredModel(Base):
    """A trained model version in the registry: provenance, card and (hub-only) weights."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_models_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    owner_org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    nodes: Mapped[list[str]] = mapped_column(JSON)
    release: Mapped[str] = mapped_column(String(16))
    # architecture, preparation, columns, target, weights (never in a study result)
    package: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)  # metrics, card, provenance

    study: Mapped[Study] = relationship(lazy="joined")
    owner: Mapped[Organisation] = relationship(lazy="joined")


class StudyProgressRow(Base):
    """One progress entry of a study (e.g. a training round's loss and AUC)."""

    __tablename__ = "study_progress"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    entry: Mapped[dict[str, Any]] = mapped_column(JSON)


class Registry(Base):
    """A specialty-disease registry: its name and current version (docs/registries.md)."""

    __tablename__ = "registries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RegistryVersion(Base):
    """One registered definition of a registry; versions are kept, never changed."""

    __tablename__ = "registry_versions"
    __table_args__ = (UniqueConstraint("registry_id", "version",
                                       name="uq_registry_versions_registry_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registry_id: Mapped[int] = mapped_column(ForeignKey("registries.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    cohort: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset: Mapped[dict[str, Any]] = mapped_column(JSON)
    refresh: Mapped[dict[str, Any]] = mapped_column(JSON)
    nodes: Mapped[list[str] | None] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(64))


class RegistryNodeStatus(Base):
    """What a node last reported (signed) about its materialisation of a registry."""

    __tablename__ = "registry_node_status"

    registry_id: Mapped[int] = mapped_column(ForeignKey("registries.id"), primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), primary_key=True, index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    digest: Mapped[str | None] = mapped_column(String(64))
    # Released sizes as the node sent them: a multiple of 10 or "<k" (never a raw count).
    size: Mapped[str | None] = mapped_column(String(16))
    dataset_size: Mapped[str | None] = mapped_column(String(16))
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    envelope_id: Mapped[int] = mapped_column(Integer)

    node: Mapped[Node] = relationship(lazy="joined")


def nodes_with_documents() -> Select[Node]:
    """SELECT nodes with their catalogue and policy, for code that reads them of many nodes."""
    return select(Node).options(undefer_group(NODE_DOCUMENTS))
