"""Benchmark: federated cohort count (real hub + node processes over HTTP) vs one pooled query.

3 synthetic sites of ~330k persons each. The federated time is submit → result at the client
(HTTP, long-polling nodes, node-side SQL and disclosure control, combine); the pooled time is
one DuckDB query of the same compiled cohort over all sites' tables in one database.
Target: federated ≤ 1.5 × pooled + 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.schema import TABLES
from healthspace.cdm.store import create_schema
from healthspace.cdm.synth import generate
from healthspace.client.sdk import HubClient
from healthspace.cohort.compiler import compile_cohort
from healthspace.cohort.models import load_cohort
from healthspace.demo_data import showcase_cohort
from healthspace.launch import LocalFederation

console = Console()


def build_pooled(stores: list[Path], target: Path) -> None:
    con = duckdb.connect(str(target))
    create_schema(con)
    for i, store in enumerate(stores):
        con.execute(f"ATTACH '{store}' AS s{i} (READ_ONLY)")
        for table in TABLES:
            if table in ("concept", "concept_ancestor") and i > 0:
                continue  # the vocabulary is the same at every site
            con.execute(f"INSERT INTO {table} SELECT * FROM s{i}.{table}")
        con.execute(f"DETACH s{i}")
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=330_000, help="persons per site")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    data = root / "data"
    t = time.perf_counter()
    if not (data / "hospital_3" / "person.csv").exists():
        generate(data, sites=3, persons=args.persons, seed=1)
    console.print(f"synthetic data ready in {time.perf_counter() - t:.1f}s ({data})")
    cohort = showcase_cohort()
    sites = ["hospital_1", "hospital_2", "hospital_3"]
    with LocalFederation(root / "fed") as fed:
        fed.init_hub()
        fed.start_hub()
        stores = []
        t = time.perf_counter()
        for site in sites:
            store = fed.workdir / "nodes" / f"{site}.duckdb"
            ingest_dir(store, data / site)
            stores.append(store)
            fed.ensure_org(site, "hospital")
            fed.add_node(site, site, store, policy={"level": "L1"})  # auto-approved
        console.print(f"ingested 3 sites in {time.perf_counter() - t:.1f}s")
        fed.wait_nodes_ready()
        fed.ensure_org("bench", "consumer")
        with fed.operator() as op:
            op.add_user("bench", "bench", "consumer")
            token = op.issue_token("bench").token
        fed_times, total = [], None
        with HubClient(fed.url, token) as client:
            for i in range(args.repeats + 1):
                t = time.perf_counter()
                view = client.wait(client.submit({"analysis": "cohort_count",
                                                  "cohort": cohort}).id, timeout=300)
                elapsed = time.perf_counter() - t
                assert view.status.value == "completed", view.error
                total = view.result["total"]
                if i:  # the first run warms the OS cache of every store
                    fed_times.append(elapsed)
        pooled_path = root / "pooled.duckdb"
        pooled_path.unlink(missing_ok=True)
        build_pooled(stores, pooled_path)
    compiled = compile_cohort(load_cohort(cohort))
    con = duckdb.connect(str(pooled_path), read_only=True)
    pooled_times, pooled_n = [], None
    for i in range(args.repeats + 1):
        t = time.perf_counter()
        pooled_n = con.execute(f"SELECT count(*) FROM ({compiled.sql})",
                               compiled.params).fetchone()[0]
        if i:
            pooled_times.append(time.perf_counter() - t)
    con.close()
    fed_s, pooled_s = statistics.median(fed_times), statistics.median(pooled_times)
    table = Table(title=f"cohort count, 3 sites × {args.persons:,} persons (median of "
                        f"{args.repeats})")
    for col in ("path", "seconds", "persons"):
        table.add_column(col)
    table.add_row("federated (HTTP, 3 node processes)", f"{fed_s:.3f}", f"{total:,}")
    table.add_row("pooled DuckDB query", f"{pooled_s:.3f}", f"{pooled_n:,}")
    table.add_row("ratio federated / pooled", f"{fed_s / pooled_s:.2f}", "")
    budget = 1.5 * pooled_s + 0.1
    table.add_row("target 1.5 × pooled + 0.1 s", f"{budget:.3f}",
                  "met" if fed_s <= budget else "NOT met")
    console.print(table)
    assert total == pooled_n, (total, pooled_n)


if __name__ == "__main__":
    main()
