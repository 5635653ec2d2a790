"""Request and response models of the hub's governance endpoints (hub-local wire formats)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from healthspace.core.models import Wire
from healthspace.governance.engine import ApprovalStep, Decision


class PolicyPublished(Wire):
    node: str
    version: int
    policy: dict[str, Any]
    envelope_id: int
    published_at: datetime


class KeyRotated(Wire):
    node: str
    public_key: str
    retired: str


class HubKeyView(Wire):
    public_key: str
    rotations: list[dict[str, str]] = Field(description="rotation statements, oldest first")


class CheckResult(Wire):
    nodes: dict[str, Decision] = Field(description="node -> the decision a submit would get")


class ApproveSpec(Wire):
    step: ApprovalStep | None = Field(default=None, description="default: the next missing step")
    comment: str | None = Field(default=None, max_length=2000)
    ethics_ref: str | None = Field(
        default=None, max_length=200, description="the ethics committee's reference (ethics)"
    )


class RejectSpec(Wire):
    comment: str = Field(min_length=1, max_length=2000, description="why; shown to the consumer")


class ApprovalView(Wire):
    study_id: int
    node: str
    title: str | None = None
    analysis: str
    purpose: str
    consumer: str
    consumer_org: str
    cohort: dict[str, Any] | None = None
    approval_mode: str
    steps_done: list[str]
    missing_steps: list[str]
    status: str
    decision: str
    reasons: list[dict[str, Any]] = Field(default_factory=list)
    approvals: list[dict[str, Any]] = Field(default_factory=list)
    submitted_at: datetime
    expires_at: datetime | None = None


class FeedbackSpec(Wire):
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=2000)
