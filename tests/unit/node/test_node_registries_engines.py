"""A node on the data holder's PostgreSQL materialises a registry to the same rows as a DuckDB
node, and a task reading them gives the live answer (the rows travel through pandas there)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_node_registries import task, view
from tests.pgcluster import Cluster

from healthspace.analyses.execute import run_local
from healthspace.cdm.engines import StoreSpec, open_engine
from healthspace.cdm.engines.export import copy_to_postgres
from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import open_store
from healthspace.node import registries
from healthspace.node.registries import Shelf

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stores(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, Any]]:
    store = tmp_path_factory.mktemp("pg_registry") / "h1.duckdb"
    ingest_dir(store, synth_dir / "hospital_1")
    cluster = Cluster()
    try:
        url = cluster.database("cdm")
        con = open_store(store)
        copy_to_postgres(con, url, "cdm")
        con.close()
        pg = open_engine(StoreSpec(engine="postgresql", url=url, schema="cdm"))
        yield store, pg
        pg.close()
    finally:
        cluster.stop()


def _rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY person_id").fetchall()
    finally:
        con.close()


def test_postgresql_node_builds_the_same_registry(stores: tuple[Path, Any],
                                                  tmp_path: Path) -> None:
    store, pg = stores
    definition = view("lung_cancer_lines")
    duck = open_store(store)
    on_duck = registries.materialise(duck, definition, tmp_path / "duck", site="h1", k=10,
                                     store_version=None)
    on_pg = registries.materialise(pg, definition, tmp_path / "pg", site="h1", k=10,
                                   store_version=None)
    assert (on_pg.persons, on_pg.rows, on_pg.size) == (on_duck.persons, on_duck.rows,
                                                       on_duck.size)
    for table in ("cohort", "dataset"):
        assert _rows(on_pg.path, table) == _rows(on_duck.path, table)
    item = task(definition, "summary", {"variables": ["age", "days"],
                                        "categorical": ["first_line", "death"]})
    shelf = Shelf(tmp_path / "pg")

    def run(con: Any, rows: Any) -> dict[str, Any]:
        return run_local(con, site="h1", analysis=item.analysis, params=item.params,
                         cohort=item.cohort, dataset=item.dataset, registry=rows).partial

    live = run(pg, None)
    rows = shelf.attach(pg, item)
    assert rows is not None
    try:
        assert run(pg, rows) == live == run(duck, None)
    finally:
        shelf.detach(pg, rows)
    duck.close()
