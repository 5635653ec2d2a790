"""Benchmark: secure aggregation over the real hub and node processes, with and without.

``--nodes`` nodes (default 10) each hold a table whose Gaussian GLM ``y ~ C(g)`` with a
categorical of p levels makes every IRLS round send X'WX (p × p) and X'Wz (p): with the
default p = 317, 100,489 + 317 values per node per round, just above 10 × 100,000. The study
runs end to end (submit → result at the client: HTTP, long-polling nodes, signed envelopes,
both ledgers) with ``secure_aggregation`` off and on; with it on, every node masks its vectors
(X25519 prekeys, ChaCha20 masks in Z_2^128) and the hub adds the masked payloads. The round
time is the study time divided by its rounds (the first, levels-only round included). Both
fits must agree to 1e-8. Target ratio secure / plain ≤ 1.2.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from federated_models import run_federated  # the scripts run from this folder
from rich.console import Console
from rich.table import Table

from healthspace.cdm.ingest import ingest_table
from healthspace.client.sdk import HubClient
from healthspace.launch import LocalFederation

console = Console(stderr=True)


def make_site(levels: int, rows: int, seed: int) -> pd.DataFrame:
    """Every level at every site (so every node builds the same design), a Gaussian outcome."""
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(levels), rng.integers(0, levels, rows - levels)])
    y = 0.01 * g + rng.normal(0, 1, rows)
    return pd.DataFrame({"g": [f"L{i:04d}" for i in g], "y": y.round(6)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--values", type=int, default=100_000,
                        help="values summed per node per round (at least; p = ⌈√values⌉)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="also print a JSON summary last")
    args = parser.parse_args()
    levels = math.ceil(math.sqrt(args.values))
    rows = 4 * levels  # parameters / rows stays well below the node's 0.33 saturation limit
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-secagg-"))
    root.mkdir(parents=True, exist_ok=True)
    names = [f"site_{i:02d}" for i in range(args.nodes)]
    with LocalFederation(root / "fed") as fed:
        fed.init_hub()
        fed.start_hub()
        for i, name in enumerate(names):
            csv = root / f"{name}.csv"
            make_site(levels, rows, seed=i + 1).to_csv(csv, index=False)
            store = fed.workdir / "nodes" / f"{name}.duckdb"
            ingest_table(store, csv)
            fed.ensure_org(name, "hospital")
            fed.add_node(name, name, store, policy={"level": "L1"})
        fed.wait_nodes_ready(timeout=120)
        fed.ensure_org("bench", "consumer")
        with fed.operator() as op:
            op.add_user("bench", "bench", "consumer")
            token = op.issue_token("bench").token
        spec = {"analysis": "glm", "nodes": names,
                "params": {"formula": "y ~ C(g)", "family": "gaussian"}}
        with HubClient(fed.url, token) as client:
            console.print(f"{args.nodes} nodes × {levels * levels + levels:,} values per round; "
                          f"{args.repeats} repeats after one warm-up each")
            plain_t, plain_res, plain_rounds = run_federated(client, spec, args.repeats)
            secure_t, secure_res, secure_rounds = run_federated(
                client, {**spec, "secure_aggregation": True}, args.repeats)
    assert secure_res.get("secure_aggregation") is True
    diff = max(abs(plain_res["params"][k] - secure_res["params"][k]) for k in plain_res["params"])
    plain_s, secure_s = statistics.median(plain_t), statistics.median(secure_t)
    plain_round, secure_round = plain_s / plain_rounds, secure_s / secure_rounds
    ratio = secure_round / plain_round
    table = Table(title=f"secure aggregation, {args.nodes} nodes × {levels * levels + levels:,} "
                        f"values (median of {args.repeats}; target ratio ≤ 1.2)")
    for column in ("mode", "study s", "rounds", "s / round", "ratio"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    table.add_row("plain", f"{plain_s:.2f}", str(plain_rounds), f"{plain_round:.3f}", "1.00")
    table.add_row("secure", f"{secure_s:.2f}", str(secure_rounds), f"{secure_round:.3f}",
                  f"{ratio:.2f}")
    Console().print(table)
    console.print(f"max |Δ coefficient| secure vs plain: {diff:.1e}")
    if diff > 1e-8:
        raise SystemExit("secure and plain fits differ by more than 1e-8")
    if args.json:
        print(json.dumps({"nodes": args.nodes, "values_per_node": levels * levels + levels,
                          "plain_round_s": round(plain_round, 4),
                          "secure_round_s": round(secure_round, 4),
                          "ratio": round(ratio, 3), "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
