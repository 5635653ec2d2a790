"""In-process federation: the same analyses over local OMOP folders, no HTTP, no hub.

Each site folder is loaded into its own in-memory DuckDB through the regular ingest path, so
simulation sees exactly what a node would; ``local`` runs per site and ``combine`` merges,
round after round, as the hub would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import duckdb

from healthspace.analyses import registry
from healthspace.analyses.base import Final
from healthspace.analyses.execute import run_local
from healthspace.cdm.ingest import load_into
from healthspace.cdm.store import create_schema
from healthspace.core.errors import InvalidInput


def load_site(directory: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory CDM store loaded from one OMOP CSV folder."""
    if not Path(directory).is_dir():
        raise InvalidInput(f"site folder {directory} does not exist", field="site")
    con = duckdb.connect()
    create_schema(con)
    load_into(con, Path(directory))
    return con


def parse_site_args(values: list[str]) -> dict[str, Path]:
    """Parse repeated ``NAME=DIR`` options."""
    sites: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InvalidInput(f"expected NAME=DIR, got {value!r}", field="site")
        if name in sites:
            raise InvalidInput(f"site {name!r} given twice", field="site")
        sites[name] = Path(path)
    if not sites:
        raise InvalidInput("give at least one --site NAME=DIR", field="site")
    return sites


def simulate(
    analysis: str,
    connections: Mapping[str, duckdb.DuckDBPyConnection],
    *,
    params: dict[str, Any] | None = None,
    cohort: dict[str, Any] | None = None,
    min_cell_size: int = 10,
    purpose: str = "research",
    on_round: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``analysis`` over already-loaded site connections and return the final result."""
    impl = registry.get(analysis)
    parsed = impl.parse_params(params)
    state: dict[str, Any] = {}
    round_input: dict[str, Any] | None = None
    for round_no in range(1, impl.max_rounds + 1):
        if on_round:
            on_round(round_no)
        partials = {
            name: run_local(
                con,
                site=name,
                analysis=analysis,
                params=params,
                cohort=cohort,
                round_input=round_input,
                min_cell_size=min_cell_size,
                purpose=purpose,
            ).partial
            for name, con in connections.items()
        }
        outcome = impl.combine(partials, parsed, state, round_no)
        if isinstance(outcome, Final):
            return outcome.result
        state, round_input = outcome.state, outcome.round_input
    raise InvalidInput(f"{analysis} did not finish within {impl.max_rounds} rounds")


def simulate_dirs(
    analysis: str, sites: Mapping[str, Path], **kwargs: Any
) -> dict[str, Any]:
    connections = {name: load_site(path) for name, path in sites.items()}
    try:
        return simulate(analysis, connections, **kwargs)
    finally:
        for con in connections.values():
            con.close()
