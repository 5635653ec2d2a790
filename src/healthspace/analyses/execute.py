"""Run one analysis's ``local`` step on a CDM connection — shared by the node and simulation."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import duckdb

from healthspace.analyses import registry
from healthspace.analyses.base import LocalContext
from healthspace.core.clock import Clock, SystemClock
from healthspace.governance.consent_filter import ConsentFilter


@dataclass(frozen=True)
class LocalRun:
    partial: dict[str, Any]
    records: int
    seconds: float
    bytes: int


def run_local(
    con: duckdb.DuckDBPyConnection,
    *,
    site: str,
    analysis: str,
    params: dict[str, Any] | None,
    cohort: dict[str, Any] | None,
    round_input: dict[str, Any] | None = None,
    min_cell_size: int = 10,
    purpose: str = "research",
    clock: Clock | None = None,
    consent: ConsentFilter | None = None,
) -> LocalRun:
    """Validate the request as a node must (never trusting the sender) and run ``local``."""
    from healthspace.cohort.models import load_cohort

    impl = registry.get(analysis)
    parsed = impl.parse_params(params)
    definition = load_cohort(cohort) if cohort is not None else None
    if impl.requires_cohort and definition is None:
        from healthspace.core.errors import InvalidInput

        raise InvalidInput("this analysis needs a cohort", field="cohort")
    ctx = LocalContext(
        con=con,
        site=site,
        min_cell_size=min_cell_size,
        cohort=definition,
        purpose=purpose,
        clock=clock or SystemClock(),
        consent=consent,
    )
    started = time.perf_counter()
    partial = impl.local(ctx, parsed, round_input)
    seconds = time.perf_counter() - started
    size = len(json.dumps(partial, separators=(",", ":")))
    return LocalRun(partial=partial, records=ctx.records_used, seconds=seconds, bytes=size)
