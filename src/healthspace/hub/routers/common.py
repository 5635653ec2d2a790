"""Shared router pieces: pagination bounds."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Query

MAX_LIMIT = 500


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page(
    limit: int = Query(100, ge=1, le=MAX_LIMIT, description="at most this many items"),
    offset: int = Query(0, ge=0, le=10_000_000, description="skip this many items"),
) -> Page:
    return Page(limit=limit, offset=offset)
