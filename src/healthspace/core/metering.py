"""Wire models of metering and settlement: a node's meter, the hub's records and statements."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from healthspace.core.enums import TaskStatus
from healthspace.core.models import NAME_PATTERN, Wire

PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


class Meter(Wire):
    """What one execution used, measured on the node and signed with its result.

    ``persons`` is disclosure-controlled like every number that leaves the node: exact when
    the node may release its own count (0 when that count was suppressed, as it then added
    nothing to the released result); rounded up to a band of ``persons_band`` when the node
    withholds its own count under secure aggregation; the noised count for DP and obfuscated
    releases.
    """

    analysis: str = Field(min_length=1, max_length=64)
    status: TaskStatus
    preview: bool = False
    records_scanned: int = Field(default=0, ge=0,
                                 description="rows of the CDM tables the task's queries read")
    persons: int = Field(default=0, ge=0, description="persons contributing to the result")
    persons_band: int | None = Field(default=None, ge=1,
                                     description="set when persons is rounded up to this band")
    seconds: float = Field(default=0.0, ge=0, description="compute seconds on the node")
    bytes: int = Field(default=0, ge=0, description="size of the result payload sent")
    epsilon: float = Field(default=0.0, ge=0, description="ε charged to the consumer's budget")


class MeterRecordView(Wire):
    """One stored meter record: a task's meter with its study, node and consumer."""

    id: int
    study_id: int
    task_id: int
    round: int
    node: str
    holder: str
    consumer: str
    consumer_org: str
    purpose: str
    recorded_at: datetime
    meter: Meter


class MeterList(Wire):
    records: list[MeterRecordView]
    totals: dict[str, float]


class AccountUpdate(Wire):
    """An operator's change to a consumer organisation's prepaid quota and credit limit."""

    deposit: float | None = Field(default=None, gt=0, le=1e12,
                                  description="added to the prepaid balance")
    credit_limit: float | None = Field(default=None, ge=0, le=1e12,
                                       description="how far past the prepaid balance it may go")


class AccountView(Wire):
    org: str
    currency: str
    prepaid: float
    credit_limit: float
    invoiced: float
    reserved: float = Field(description="estimates of its studies not yet settled")
    available: float
    updated_at: datetime | None = None


class StatementLine(Wire):
    """One study × data holder line of a statement (an invoice line or an earning)."""

    study_id: int
    title: str | None = None
    settled_at: datetime
    consumer_org: str
    holder: str
    node: str
    purpose: str
    persons: int
    persons_band: int | None = Field(default=None, description="persons rounded up to this "
                                     "band (a node that withholds its own count)")
    compute_seconds: float
    epsilon: float
    records_scanned: int
    points: float
    rate: float
    charge: float
    platform_fee: float
    earned: float


class Statement(Wire):
    """An invoice (consumer), an earnings statement (data holder) or the platform's summary."""

    kind: Literal["invoice", "earnings", "platform"]
    org: str = Field(pattern=NAME_PATTERN)
    period: str = Field(pattern=PERIOD_PATTERN)
    currency: str
    fee_rate: float
    lines: list[StatementLine]
    totals: dict[str, Any]
