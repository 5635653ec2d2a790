"""Prices and service levels in a dataset's policy, and the pure pricing of measured usage.

Money is computed in integer minor units (cents, 分) of the data space's one settlement
currency, rounding half up once per priced line, so invoices, earnings and platform fees add
up exactly. Prices are per unit of that currency; a purpose rate multiplies the whole charge
(``public_health: 0`` makes public-health studies free, ``research: 0.5`` halves them).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from healthspace.core.errors import InvalidInput

CENT = Decimal("0.01")
PRICE_KEYS = ("per_study", "per_person", "per_compute_second", "per_epsilon")


class Prices(BaseModel):
    """What a consumer pays this dataset for one study (docs/metering.md#prices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_study: float = Field(default=0, ge=0, le=1e9, description="a fixed fee per study")
    per_person: float = Field(default=0, ge=0, le=1e6,
                              description="per person contributing to the result")
    per_compute_second: float = Field(default=0, ge=0, le=1e6,
                                      description="per second of node compute")
    per_epsilon: float = Field(default=0, ge=0, le=1e9, description="per unit of ε spent")
    per_preview: float = Field(default=0, ge=0, le=1e6,
                               description="a feasibility preview's whole price")
    purpose_rates: dict[str, float] = Field(
        default_factory=dict, description="purpose -> multiplier of the charge (0 = free); "
                                          "purposes not listed pay full price")

    @field_validator("purpose_rates")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        from healthspace.governance.policy import Purpose

        known = {str(p) for p in Purpose}
        for purpose, rate in value.items():
            if purpose not in known:
                raise ValueError(f"unknown purpose {purpose!r}; one of {', '.join(sorted(known))}")
            if not 0 <= rate <= 10:
                raise ValueError(f"the rate for {purpose!r} must be between 0 and 10")
        return value

    def rate(self, purpose: str) -> float:
        return float(self.purpose_rates.get(purpose, 1.0))


class ServiceLevels(BaseModel):
    """The data holder's service-level targets for studies of this dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approval_hours: float | None = Field(
        default=None, gt=0, le=24 * 365,
        description="a study needing approval is decided (approved or rejected) within this")
    result_minutes: float | None = Field(
        default=None, gt=0, le=60 * 24 * 365,
        description="a started study has its result within this many minutes of approval")


@dataclass(frozen=True)
class Usage:
    """What one node measured for one study, summed over its completed tasks."""

    persons: int = 0
    persons_band: int | None = None  # persons rounded up to this band by the node
    seconds: float = 0.0
    epsilon: float = 0.0
    records_scanned: int = 0
    preview: bool = False


@dataclass(frozen=True)
class Charge:
    """A priced usage: each line and the total in cents, before the platform fee."""

    lines: dict[str, int]
    rate: float
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"lines": dict(self.lines), "rate": self.rate, "total_cents": self.total}


def cents(amount: Decimal | float | int) -> int:
    """Round a currency amount to whole cents, half up."""
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    return int((value / CENT).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def money(value: int) -> float:
    """Cents as a currency amount (for display and JSON)."""
    return float(Decimal(value) * CENT)


def price(prices: Prices | None, usage: Usage, purpose: str) -> Charge:
    """The consumer's charge for ``usage`` under ``prices``; no prices means free."""
    if prices is None:
        return Charge(lines={}, rate=1.0, total=0)
    rate = Decimal(str(prices.rate(purpose)))
    if usage.preview:
        amounts = {"per_preview": Decimal(str(prices.per_preview))}
    else:
        amounts = {
            "per_study": Decimal(str(prices.per_study)),
            "per_person": Decimal(str(prices.per_person)) * usage.persons,
            "per_compute_second": Decimal(str(prices.per_compute_second))
            * Decimal(repr(round(usage.seconds, 6))),
            "per_epsilon": Decimal(str(prices.per_epsilon)) * Decimal(repr(usage.epsilon)),
        }
    lines = {key: cents(amount * rate) for key, amount in amounts.items() if amount}
    return Charge(lines=lines, rate=float(rate), total=sum(lines.values()))


def split_fee(total: int, fee_rate: float) -> tuple[int, int]:
    """``(fee, earned)`` of a charge: the platform keeps ``fee_rate`` of it, rounded half up."""
    fee = cents(Decimal(total) * CENT * Decimal(str(fee_rate)))
    return fee, total - fee


def load_prices(value: dict[str, Any] | None) -> Prices | None:
    if value is None:
        return None
    try:
        return Prices.model_validate(value)
    except ValueError as exc:  # stored copies were validated once; report, never crash
        raise InvalidInput(f"invalid prices: {exc}", field="policy.prices") from exc


def load_service_levels(value: dict[str, Any] | None) -> ServiceLevels:
    return ServiceLevels() if value is None else ServiceLevels.model_validate(value)
