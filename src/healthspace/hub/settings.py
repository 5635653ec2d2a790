"""Hub settings: disclosure defaults, long-poll timing, webhooks."""

from __future__ import annotations

from dataclasses import dataclass, field

from healthspace.core.limits import DEFAULT_MIN_CELL, MIN_CELL_FLOOR

MAX_WAIT_SECONDS = 60


@dataclass(frozen=True)
class HubSettings:
    """Tunables of one hub; defaults suit production and tests alike."""

    default_min_cell_size: int = DEFAULT_MIN_CELL
    # Long-polls re-check the database this often even without an in-process wake-up,
    # so several hub worker processes sharing one database still see each other's writes
    # (within this many seconds). Within one process the notifier wakes them at once; a
    # shorter interval only costs a check per waiting node and consumer per interval.
    recheck_seconds: float = 5.0
    # Study status changes are POSTed (signed by the hub key) to each of these URLs.
    webhooks: list[str] = field(default_factory=list)
    webhook_timeout: float = 5.0
    # Request bodies above this are refused with 413 (result envelopes of large survival
    # analyses are a few MB; nothing legitimate comes near this).
    max_body_bytes: int = 64 * 1024 * 1024
    # Settlement: the data space's one currency (policies price in it) and the share of
    # every charge the platform keeps; the rest is the data holders' earnings.
    currency: str = "CNY"
    platform_fee_rate: float = 0.10
    # Check service levels in the background this often (None: only when the KPI or SLA
    # endpoints are read, as in tests that move the clock by hand).
    sla_sweep_seconds: float | None = None
    # The KPI report's ledger verification walks the whole ledger at most this often and in
    # between only what was appended (hub/services/ledger_check.py).
    ledger_full_check_seconds: float = 60.0

    @property
    def min_cell_size(self) -> int:
        return max(self.default_min_cell_size, MIN_CELL_FLOOR)
