"""Benchmark: interactive similar-patient lookups through the real hub and 3 hospital nodes.

3 synthetic hospitals of 300k persons each (DuckDB stores), a real uvicorn hub and three node
agent processes on loopback. Each lookup is a different type 2 diabetes profile (age, HbA1c,
eGFR vary), submitted by a clinician and waited for: submit → result at the client, two
rounds (network standardisation, then the k nearest and their outcomes). The first lookup
builds each node's feature matrix (cold); later ones reuse it, as a node does between
re-ingests. The pooled baseline runs the same two steps in-process over one DuckDB store
holding all three sites. Target: federated p50 under 2 s.

With ``--json`` the last line is ``{"p50_s": ..., "p95_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cohort_count import build_pooled  # benchmarks/: the pooled store of several sites
from rich.console import Console
from rich.table import Table

from healthspace.analyses import registry
from healthspace.analyses.base import Final, NextRound
from healthspace.analyses.execute import run_local
from healthspace.analyses.similar_features import FeatureCache
from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import open_store, state_path
from healthspace.cdm.synth import generate
from healthspace.client.sdk import HubClient
from healthspace.launch import LocalFederation

SITES = ["hospital_1", "hospital_2", "hospital_3"]
COHORT = {"name": "Type 2 diabetes", "entry": {"condition": {"codes": ["ICD10:E11%"]}}}
POLICY = {"level": "L1", "allowed_purposes": ["research", "clinical_care"]}


def profile_params(i: int, k: int) -> dict[str, Any]:
    """The i-th lookup: a T2D patient whose age and labs differ from lookup to lookup."""
    return {
        "profile": {"age": 45 + (i * 7) % 35, "sex": "M" if i % 2 else "F",
                    "conditions": ["ICD10:E11.9"] + (["ICD10:I10"] if i % 3 else []),
                    "labs": {"LOINC:4548-4": 6.5 + (i % 9) * 0.4,
                             "LOINC:33914-3": 40.0 + (i * 11) % 60},
                    "drugs": ["ATC:A10BA02"]},
        "k": k,
        "treatments": [{"name": "insulin", "codes": ["ATC:A10AB%"], "window_days": 365},
                       {"name": "sulfonylurea", "codes": ["ATC:A10BB%"], "window_days": 365},
                       {"name": "statin", "codes": ["ATC:C10AA%"], "window_days": 365}],
        "outcomes": [{"name": "kidney complication",
                      "codes": ["ICD10:N18%", "ICD10:E11.21", "ICD10:E11.22"],
                      "horizon_days": 730},
                     {"name": "death", "death": True, "horizon_days": 1825}],
    }


def pooled_lookup(con: Any, cache: FeatureCache, params: dict[str, Any]) -> float:
    """Both steps of the lookup in-process on the pooled store; returns seconds."""
    impl = registry.get("similar_patients")
    parsed = impl.parse_params(params)
    started = time.perf_counter()
    first = run_local(con, site="pooled", analysis="similar_patients", params=params,
                      cohort=COHORT, feature_cache=cache, purpose="clinical_care")
    step = impl.combine({"pooled": first.partial}, parsed, {}, 1)
    assert isinstance(step, NextRound)
    second = run_local(con, site="pooled", analysis="similar_patients", params=params,
                       cohort=COHORT, round_input=step.round_input, feature_cache=cache,
                       purpose="clinical_care")
    final = impl.combine({"pooled": second.partial}, parsed, step.state, 2)
    assert isinstance(final, Final)
    return time.perf_counter() - started


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=300_000, help="persons per hospital")
    parser.add_argument("--lookups", type=int, default=20, help="warm lookups timed")
    parser.add_argument("--k", type=int, default=200, help="similar patients per node")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="last line: p50/p95 as JSON")
    args = parser.parse_args()
    console = Console(file=sys.stderr if args.json else sys.stdout)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-similar-"))
    data = root / "data"
    t = time.perf_counter()
    if not (data / "hospital_3" / "person.csv").exists():
        generate(data, sites=3, persons=args.persons, seed=3)
    console.print(f"synthetic data ready in {time.perf_counter() - t:.1f}s ({data})")
    stores = [root / "stores" / f"{site}.duckdb" for site in SITES]
    t = time.perf_counter()
    for site, store in zip(SITES, stores, strict=True):
        if not store.exists():
            ingest_dir(store, data / site)
    console.print(f"stores ready in {time.perf_counter() - t:.1f}s")
    times: list[float] = []
    shutil.rmtree(root / "fed", ignore_errors=True)  # a fresh hub and node state every run
    for store in stores:
        for stale in store.parent.glob(f"{state_path(store).name}*"):
            stale.unlink()
    with LocalFederation(root / "fed") as fed:
        fed.init_hub()
        fed.start_hub()
        for site, store in zip(SITES, stores, strict=True):
            fed.ensure_org(site, "hospital")
            fed.add_node(site, site, store, policy=POLICY)
        fed.wait_nodes_ready()
        fed.ensure_org("clinic", "consumer")
        with fed.operator() as op:
            op.add_user("clinician", "clinic", "consumer")
            token = op.issue_token("clinician").token
        with HubClient(fed.url, token) as client:
            for i in range(args.lookups + 1):
                spec = {"analysis": "similar_patients", "purpose": "clinical_care",
                        "cohort": COHORT, "params": profile_params(i, args.k), "nodes": SITES}
                t = time.perf_counter()
                view = client.wait(client.submit(spec).id, timeout=600)
                elapsed = time.perf_counter() - t
                assert view.status.value == "completed", view.error
                assert view.result is not None and view.result["matched"] == 3 * args.k
                if i == 0:
                    cold = elapsed
                    console.print(f"first lookup (builds the feature matrices): {cold:.2f}s")
                else:
                    times.append(elapsed)
    pooled_path = root / "pooled.duckdb"
    if not pooled_path.exists():
        build_pooled(stores, pooled_path)
    con = open_store(pooled_path, read_only=True)
    cache = FeatureCache()
    pooled_cold = pooled_lookup(con, cache, profile_params(0, args.k))
    pooled = [pooled_lookup(con, cache, profile_params(i, args.k))
              for i in range(1, args.lookups + 1)]
    con.close()
    p50, p95 = statistics.median(times), quantile(times, 0.95)
    pooled_p50 = statistics.median(pooled)
    table = Table(title=f"similar-patient lookup, 3 hospitals × {args.persons:,} persons, "
                        f"k = {args.k} per node, {args.lookups} warm lookups")
    for col in ("path", "p50 s", "p95 s", "first (cold) s"):
        table.add_column(col)
    table.add_row("federated (hub + 3 node processes, 2 rounds)", f"{p50:.3f}",
                  f"{p95:.3f}", f"{cold:.2f}")
    table.add_row("pooled, in-process (one store)", f"{pooled_p50:.3f}",
                  f"{quantile(pooled, 0.95):.3f}", f"{pooled_cold:.2f}")
    table.add_row("ratio federated / pooled (p50)", f"{p50 / pooled_p50:.2f}", "", "")
    table.add_row("target p50 < 2 s", "met" if p50 < 2.0 else "NOT met", "", "")
    console.print(table)
    if args.json:
        print(json.dumps({"p50_s": round(p50, 4), "p95_s": round(p95, 4)}))


if __name__ == "__main__":
    main()
