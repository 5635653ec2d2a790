"""Run one analysis's ``local`` step on a CDM connection — shared by the node and simulation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import duckdb

from healthspace.analyses import registry as catalogue
from healthspace.analyses.base import Analysis, Linkage, LocalContext, RegistryRows
from healthspace.analyses.scan import MeteredConnection
from healthspace.analyses.secure import Masker
from healthspace.cdm.store import has_table
from healthspace.core.clock import Clock, SystemClock
from healthspace.core.errors import InvalidInput
from healthspace.governance.consent_filter import ConsentFilter


@dataclass(frozen=True)
class LocalRun:
    partial: dict[str, Any]
    records: int  # persons (pv: reports) contributing, as the analysis counts them
    seconds: float
    bytes: int
    records_scanned: int = 0  # rows of the store tables read (healthspace.analyses.scan)


def check_inputs(impl: Analysis, has_cohort: bool, has_dataset: bool) -> None:
    """The cohort / dataset combinations an analysis accepts; errors name the field.

    A table analysis takes either both (a node builds ``analysis_data`` from the cohort) or
    neither (the site already holds ``analysis_data``, as in simulation over plain tables).
    """
    if impl.uses_table:
        if has_dataset and not has_cohort:
            raise InvalidInput("an analysis dataset needs a cohort to start from",
                               field="cohort")
        if has_cohort and not has_dataset:
            raise InvalidInput(f"analysis {impl.name!r} reads an analysis dataset: give "
                               f"'dataset' with the cohort", field="dataset")
        return
    if has_dataset:
        raise InvalidInput(f"analysis {impl.name!r} takes no analysis dataset", field="dataset")
    if impl.requires_cohort and not has_cohort:
        raise InvalidInput(f"analysis {impl.name!r} needs a cohort", field="cohort")


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
    dataset: dict[str, Any] | None = None,
    release_guard: Callable[[Sequence[int]], None] | None = None,
    masker: Masker | None = None,
    release_site_counts: bool = True,
    linkage: Linkage | None = None,
    score_sink: Any = None,
    findings_sink: Any = None,
    registry: RegistryRows | None = None,
    feature_cache: Any = None,
) -> LocalRun:
    """Validate the request as a node must (never trusting the sender) and run ``local``.

    ``release_guard`` is the node's differencing defence (see :class:`LocalContext`). With a
    ``masker`` the analysis runs ``local_secure`` and the masker seals its sums for secure
    aggregation (:mod:`healthspace.analyses.secure`). ``registry`` names the session tables
    holding a registry's rows for this cohort and dataset (the node checked they match): the
    cohort and the analysis dataset are read from them instead of being compiled.
    """
    from healthspace.cohort.dataset import build_analysis_table, load_dataset
    from healthspace.cohort.models import load_cohort

    impl = catalogue.get(analysis)
    parsed = impl.parse_params(params)
    metered = MeteredConnection(con)
    definition = load_cohort(cohort) if cohort is not None else None
    spec = load_dataset(dataset) if dataset is not None else None
    check_inputs(impl, definition is not None, spec is not None)
    ctx = LocalContext(
        con=cast(duckdb.DuckDBPyConnection, metered),
        site=site,
        min_cell_size=min_cell_size,
        cohort=definition,
        purpose=purpose,
        clock=clock or SystemClock(),
        consent=consent,
        dataset=spec,
        release_guard=release_guard,
        release_site_counts=release_site_counts,
        linkage=linkage,
        score_sink=score_sink,
        findings_sink=findings_sink,
        feature_cache=feature_cache,
        registry=registry,
    )
    if masker is not None and not impl.secure:
        raise InvalidInput(f"analysis {impl.name!r} does not support secure aggregation",
                           field="secure_aggregation")
    started = time.perf_counter()
    built = False
    try:
        if spec is not None:
            build_analysis_table(ctx, spec, person_ids=impl.needs_person_ids)
            built = True
        elif impl.uses_table and not has_table(con, "analysis_data"):
            raise InvalidInput(f"site {site} holds no analysis_data table: give a cohort and "
                               f"an analysis dataset", field="dataset")
        if masker is not None:
            partial = masker(impl.local_secure(ctx, parsed, round_input))
        else:
            partial = impl.local(ctx, parsed, round_input)
    finally:
        if built:
            ctx.con.execute("DROP TABLE IF EXISTS temp.analysis_data")
    seconds = time.perf_counter() - started
    size = len(json.dumps(partial, separators=(",", ":")))
    return LocalRun(partial=partial, records=ctx.records_used, seconds=seconds, bytes=size,
                    records_scanned=metered.records_scanned())


def run_alone(con: duckdb.DuckDBPyConnection, *, site: str, analysis: str,
              params: dict[str, Any] | None, **kwargs: Any) -> dict[str, Any]:
    """A one-round analysis on this connection only — ``local`` then ``combine`` of that one
    partial — for a node operator's own view of its data (``node score``, ``payer group``)."""
    from healthspace.analyses.base import Final

    impl = catalogue.get(analysis)
    run = run_local(con, site=site, analysis=analysis, params=params,
                    cohort=kwargs.pop("cohort", None), **kwargs)
    outcome = impl.combine({site: run.partial}, impl.parse_params(params), {}, 1)
    if not isinstance(outcome, Final):
        raise InvalidInput(f"analysis {analysis!r} needs more than one round", field="analysis")
    return outcome.result
