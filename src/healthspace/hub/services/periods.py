"""Reporting periods: UTC calendar months written ``YYYY-MM``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from healthspace.core.errors import InvalidInput
from healthspace.core.metering import PERIOD_PATTERN


def month_range(period: str, field: str = "period") -> tuple[datetime, datetime]:
    """``[start, end)`` of the month ``period``; a malformed period is a 422 naming ``field``."""
    if not re.fullmatch(PERIOD_PATTERN, period or ""):
        raise InvalidInput(f"a period is a month written YYYY-MM, not {period!r}", field=field)
    year, month = int(period[:4]), int(period[5:])
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def period_of(at: datetime) -> str:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at.month:02d}"


def previous(period: str) -> str:
    start, _ = month_range(period)
    year, month = (start.year - 1, 12) if start.month == 1 else (start.year, start.month - 1)
    return f"{year:04d}-{month:02d}"
