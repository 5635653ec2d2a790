"""A node on the data holder's PostgreSQL answers a study through a real hub, as its DuckDB
twin does: a uvicorn hub process, a DuckDB node process, and a NodeAgent (engine=postgresql)
in a thread reading the same CDM copied into a PostgreSQL schema."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthspace.cdm.engines import StoreSpec
from healthspace.cdm.engines.export import copy_to_postgres
from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import open_store, state_path
from healthspace.client.sdk import HubClient
from healthspace.core.enums import StudyStatus
from healthspace.launch import LocalFederation
from healthspace.node.agent import NodeAgent
from healthspace.node.state import NodeState
from tests.pgcluster import Cluster

from .conftest import OPEN_POLICY

pytestmark = pytest.mark.slow  # a hub and a node process: about 30 s

STARTERS = {"entry": {"drug": {"codes": ["ATC:A10BB09", "ATC:A10BA02"]}},
            "inclusion": [{"age": {"min": 18}}]}


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A synthetic hospital as a DuckDB store and as the ``cdm`` schema of a PostgreSQL db."""
    from healthspace.cdm.synth import generate

    out = tmp_path_factory.mktemp("engine_e2e")
    generate(out, sites=1, persons=1_500, seed=5)
    store = out / "hospital.duckdb"
    ingest_dir(store, out / "hospital_1")
    cluster = Cluster()
    try:
        url = cluster.database("cdm")
        con = open_store(store)
        try:
            copy_to_postgres(con, url, "cdm")
        finally:
            con.close()
        yield url, store
    finally:
        cluster.stop()


def _wait_catalogs(fed: LocalFederation, names: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with fed.operator() as op:
            nodes = {n.name: n for n in op.list_nodes() if n.catalog is not None}
        if names <= nodes.keys():
            return nodes
        time.sleep(0.2)
    raise AssertionError(f"nodes without a catalogue after {timeout}s: {names - nodes.keys()}")


def test_postgres_node_answers_a_count_study_like_the_duckdb_node(pg_url, tmp_path) -> None:
    url, store = pg_url
    fed = LocalFederation(tmp_path / "fed", poll_wait=2.0)
    fed.init_hub()
    fed.start_hub()
    agent: NodeAgent | None = None
    thread: threading.Thread | None = None
    try:
        fed.ensure_org("holder", "hospital")
        fed.add_node("duck_node", "holder", store, policy=OPEN_POLICY)
        # The PostgreSQL node has no store file: its state lives beside a notional path.
        notional = tmp_path / "pg_node.duckdb"
        enrolled = fed.add_node("pg_node", "holder", notional, start=False, policy=OPEN_POLICY)
        agent = NodeAgent(hub=fed.url, token=enrolled.token, store=notional,
                          state=NodeState.open(state_path(notional)), poll_wait=1.0,
                          engine=StoreSpec(engine="postgresql", url=url, schema="cdm"))
        thread = threading.Thread(target=agent.run_forever, daemon=True)
        thread.start()
        nodes = _wait_catalogs(fed, {"duck_node", "pg_node"})
        duck_cat, pg_cat = nodes["duck_node"].catalog, nodes["pg_node"].catalog
        assert pg_cat.tables == duck_cat.tables and pg_cat.vocabularies == duck_cat.vocabularies
        assert duck_cat.quality is not None and pg_cat.quality is None  # DuckDB-only checks
        fed.ensure_org("pharma", "consumer")
        with fed.operator() as op:
            op.add_user("analyst", "pharma", "consumer")
            token = op.issue_token("analyst").token
        with HubClient(fed.url, token) as client:
            view = client.wait(client.submit({
                "analysis": "cohort_count", "cohort": STARTERS, "purpose": "research",
                "nodes": ["duck_node", "pg_node"]}).id, timeout=120)
        assert view.status == StudyStatus.COMPLETED, (view.error, view.tasks)
        sites = view.result["sites"]
        assert isinstance(sites["duck_node"], int) and sites["duck_node"] >= 100
        assert sites["pg_node"] == sites["duck_node"]
        assert view.result["breakdown"]["pg_node"] == view.result["breakdown"]["duck_node"]
    finally:
        if agent is not None:
            agent.stop()
        if thread is not None:
            thread.join(timeout=30)
        fed.close()
