"""Lifecycle, role and exit-code enums used by hub, node, client and CLI alike."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class StudyStatus(StrEnum):
    """Study lifecycle: submitted → awaiting_approval → running → a terminal state."""

    SUBMITTED = "submitted"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STUDY_STATUSES


TERMINAL_STUDY_STATUSES = frozenset(
    {
        StudyStatus.COMPLETED,
        StudyStatus.PARTIAL,
        StudyStatus.FAILED,
        StudyStatus.REJECTED,
        StudyStatus.CANCELLED,
    }
)


class TaskStatus(StrEnum):
    """Per-node task lifecycle: queued → running → completed | failed | refused."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUSED = "refused"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.REFUSED)


class Role(StrEnum):
    """Roles of human (or service) users; nodes are principals of kind ``node``."""

    OPERATOR = "operator"
    DATA_HOLDER_ADMIN = "data_holder_admin"
    CONSUMER = "consumer"
    AUDITOR = "auditor"


class PrincipalKind(StrEnum):
    USER = "user"
    NODE = "node"


class OrgKind(StrEnum):
    """What an organisation is in the data space."""

    OPERATOR = "operator"
    HOSPITAL = "hospital"
    PAYER = "payer"
    DATA_CENTRE = "data_centre"
    CONSUMER = "consumer"


DATA_HOLDER_KINDS = frozenset({OrgKind.HOSPITAL, OrgKind.PAYER, OrgKind.DATA_CENTRE})


class ExitCode(IntEnum):
    """Process exit codes shared by every CLI command."""

    OK = 0
    ERROR = 1
    INVALID = 2
    DENIED = 3
    PARTIAL = 4
