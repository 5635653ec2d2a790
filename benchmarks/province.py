"""Benchmark: province scale — node throughput at 10 million persons, extrapolated to a region.

1. **Node throughput.** One DuckDB node store of ``--persons`` persons (default 10 million,
   about 0.9 billion CDM rows; built once by ``data_factory.build_large_store`` and cached in
   ``--cache``) runs the showcase cohort count and a logistic GLM (metformin starters'
   diabetic kidney complication, every Newton round) through the node's own analysis code
   (``run_local``). Records scanned come from the metered connection (the full row count of
   every store table a task read); throughput = records scanned / seconds / DuckDB threads.
2. **Coordination.** ``--coordination-nodes`` light node agents (benchmarks/agents.py) and a
   real hub: the added latency of a trivial study round (a cohort count on tiny stores) —
   end-to-end minus the slowest node's own time — median of ``--coordination-studies``.
   Measured twice: with the hub on a core of its own and the agents on the others, as
   in a deployment where the nodes are other machines (this one is used in the
   extrapolation), and with hub and agents sharing every core (the agents' work then
   competes with the hub's: a pessimistic bound, extrapolated too).
3. **Extrapolation** to ``--records`` records over ``--institutions`` institutions, with the
   model and every assumption printed (:func:`extrapolate`). Goal: cohort count < 5 s.

With ``--json`` the last stdout line is one JSON object starting with
``{"records_per_s_per_core", "coordination_s_at_100_nodes", "extrapolated_cohort_count_s"}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import yaml
from data_factory import build_large_store
from rich.console import Console
from rich.table import Table

from healthspace.analyses import registry
from healthspace.analyses.base import Final
from healthspace.analyses.execute import run_local
from healthspace.cdm.store import open_store
from healthspace.demo_data import showcase_cohort

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
GLM_PARAMS = {"formula": "complication ~ age + male + hba1c + hypertension + ckd + statin",
              "family": "binomial"}


# --- the extrapolation model (pure) -----------------------------------------------------


@dataclass(frozen=True)
class Assumptions:
    """Everything the extrapolation assumes, with the default values printed."""

    records: float = 4.5e9  # CDM rows in the region
    institutions: int = 111
    largest_share: float = 0.08  # of all records, at the largest institution
    cores_per_node: int = 8  # DuckDB threads at each institution's node
    scan_fraction: float = 1.0  # of an institution's records a cohort count reads
    rtt_s: float = 0.03  # network round trip, consumer ↔ hub and hub ↔ node
    round_trips: int = 3  # submit; task delivery + result post; result delivery
    measured_nodes: int = 100  # coordination was measured with this many agents


@dataclass(frozen=True)
class Projection:
    mean_records: float
    largest_records: float
    node_mean_s: float
    node_largest_s: float
    coordination_s: float
    network_s: float
    end_to_end_mean_s: float  # every institution the mean size (a lower bound)
    end_to_end_s: float  # the largest institution bounds the round


def extrapolate(records_per_s_per_core: float, coordination_s: float, a: Assumptions,
                rounds: int = 1, records_per_round: float | None = None) -> Projection:
    """End-to-end time of a ``rounds``-round study over the region.

    Per round: each node scans ``scan_fraction`` × its records at ``records_per_s_per_core``
    × ``cores_per_node`` (linear scaling in cores: DuckDB parallelises scans); nodes run in
    parallel, so the round lasts as long as the largest institution. The hub's coordination
    grows linearly with the number of nodes (measured at ``measured_nodes``), and each round
    pays ``round_trips`` network round trips. ``records_per_round`` overrides the records a
    node scans per round (as a multiple of its records) for analyses that read more or less.
    """
    if records_per_s_per_core <= 0:
        raise ValueError("throughput must be positive")
    factor = a.scan_fraction if records_per_round is None else records_per_round
    mean = a.records / a.institutions
    largest = a.records * a.largest_share
    speed = records_per_s_per_core * a.cores_per_node
    node_mean, node_largest = mean * factor / speed, largest * factor / speed
    coordination = coordination_s * a.institutions / a.measured_nodes
    network = a.rtt_s * a.round_trips
    per_round = coordination + network
    return Projection(
        mean_records=mean, largest_records=largest, node_mean_s=node_mean,
        node_largest_s=node_largest, coordination_s=coordination, network_s=network,
        end_to_end_mean_s=rounds * (node_mean + per_round),
        end_to_end_s=rounds * (node_largest + per_round))


def model_text(a: Assumptions) -> list[str]:
    return [
        f"records R = {a.records:.3g} over N = {a.institutions} institutions; mean R/N = "
        f"{a.records / a.institutions:.3g}; the largest holds {a.largest_share:.0%} of R = "
        f"{a.records * a.largest_share:.3g}",
        f"node time = records × scan fraction ({a.scan_fraction:g}) / (throughput per core × "
        f"{a.cores_per_node} cores); scans scale linearly in cores and in records",
        "nodes work in parallel: a round lasts as long as the largest institution's node",
        f"hub coordination per round = measured at {a.measured_nodes} agents × "
        f"N / {a.measured_nodes} (linear in nodes), the hub on a core of its own (the "
        "nodes are other machines); the agents' work on the hub's cores gives the "
        "pessimistic variant",
        f"network per round = {a.round_trips} round trips × RTT {a.rtt_s * 1000:.0f} ms "
        "(submit; task delivery + result post; result delivery); connections kept alive",
        "end-to-end = rounds × (largest node time + coordination + network); the all-mean "
        "variant (every institution the mean size) is a lower bound",
    ]


# --- measuring one node -------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float  # median over the repeats (GLM: all rounds of one fit)
    records_scanned: int
    rounds: int = 1

    def per_core(self, threads: int) -> float:
        return self.records_scanned / self.seconds / threads


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(resources.files("healthspace.examples").joinpath(name)
                               .read_text()))


def measure_count(con: duckdb.DuckDBPyConnection, repeats: int) -> tuple[Measured, int]:
    """Cohort count: one warm-up, then the median of ``repeats``; the count itself too."""
    cohort = showcase_cohort()
    times, scanned, count = [], 0, 0
    for i in range(repeats + 1):
        run = run_local(con, site="province", analysis="cohort_count", params={},
                        cohort=cohort)
        if i:
            times.append(run.seconds)
        scanned, count = run.records_scanned, int(run.partial["count"])
    return Measured(statistics.median(times), scanned), count


def measure_glm(con: duckdb.DuckDBPyConnection) -> tuple[Measured, dict[str, Any]]:
    """Every round of one logistic fit, as a node runs them (local here, combine here)."""
    cohort = example("t2d_complication_cohort.yaml")
    dataset = example("t2d_complication_dataset.yaml")
    impl = registry.get("glm")
    parsed = impl.parse_params(GLM_PARAMS)
    state: dict[str, Any] = {}
    round_input: dict[str, Any] | None = None
    seconds, scanned = 0.0, 0
    for round_no in range(1, impl.max_rounds + 1):
        run = run_local(con, site="province", analysis="glm", params=GLM_PARAMS,
                        cohort=cohort, dataset=dataset, round_input=round_input)
        seconds += run.seconds
        scanned += run.records_scanned
        outcome = impl.combine({"province": run.partial}, parsed, state, round_no)
        if isinstance(outcome, Final):
            return Measured(seconds, scanned, round_no), outcome.result
        state, round_input = outcome.state, outcome.round_input
    raise RuntimeError("the GLM did not converge")


def measure_node(store: Path, repeats: int, threads: int | None) -> dict[str, Any]:
    con = open_store(store, read_only=True)
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        row = con.execute("SELECT current_setting('threads')").fetchone()
        used = int(row[0]) if row else 1
        count, persons = measure_count(con, repeats)
        glm, fit = measure_glm(con)
    finally:
        con.close()
    return {"threads": used, "count": count, "count_persons": persons, "glm": glm,
            "glm_fit": fit}


def measure_coordination(nodes: int, studies: int, root: Path,
                         pin_hub: bool = True) -> dict[str, Any]:
    """Median added latency of one-round cohort counts over ``nodes`` light agents, the hub
    on a core of its own (``pin_hub``) or sharing every core with the agents."""
    from load import LoadConfig, run_load

    config = LoadConfig(nodes=nodes, consumers=1, studies=studies, think_s=0.0, targets=0,
                        stores=min(10, nodes), persons=400, agent_procs=2, timeout_s=600.0,
                        pin_hub=pin_hub)
    report = run_load(config, root)
    if report.problems:
        raise RuntimeError(f"coordination run failed: {report.problems[:3]}")
    added = report.added
    return {"coordination_s": statistics.median(added), "nodes": nodes,
            "studies": len(added), "pin_hub": pin_hub,
            "spread_s": [round(min(added), 3), round(max(added), 3)], "added_s": added,
            "e2e_s": [s.e2e_s for s in report.studies]}


# --- report -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    large = build_large_store(cache / f"province-{args.persons}.duckdb", args.persons,
                              tile_persons=args.tile_persons)
    prepared_s = time.perf_counter() - t
    node = measure_node(large.path, args.repeats, args.threads)
    threads = node["threads"]
    count, glm = node["count"], node["glm"]
    if args.coordination_s is not None:
        coordination = {"coordination_s": args.coordination_s, "nodes": args.coordination_nodes,
                        "studies": 0, "given": True}
        shared = coordination
    else:
        with tempfile.TemporaryDirectory(prefix="bench-province-coord-") as tmp:
            coordination = measure_coordination(args.coordination_nodes,
                                                args.coordination_studies, Path(tmp) / "own")
            shared = measure_coordination(args.coordination_nodes, args.coordination_studies,
                                          Path(tmp) / "shared", pin_hub=False)
    a = Assumptions(records=args.records, institutions=args.institutions,
                    largest_share=args.largest_share, cores_per_node=args.cores_per_node,
                    scan_fraction=args.scan_fraction, rtt_s=args.rtt_ms / 1000,
                    measured_nodes=args.coordination_nodes)
    total_rows = sum(large.rows.values())
    count_tp = count.per_core(threads)
    glm_tp = glm.per_core(threads)
    cohort = extrapolate(count_tp, coordination["coordination_s"], a)
    cohort_shared = extrapolate(count_tp, shared["coordination_s"], a)
    # A GLM round reads about (records scanned per round / store rows) of a node's records.
    glm_factor = glm.records_scanned / glm.rounds / total_rows
    glm_proj = extrapolate(glm_tp, coordination["coordination_s"], a, rounds=glm.rounds,
                           records_per_round=glm_factor)
    return {
        "records_per_s_per_core": round(count_tp),
        "coordination_s_at_100_nodes": round(coordination["coordination_s"], 4),
        "extrapolated_cohort_count_s": round(cohort.end_to_end_s, 3),
        "goal_s": 5.0, "goal_met": cohort.end_to_end_s < 5.0,
        "coordination_shared_s_at_100_nodes": round(shared["coordination_s"], 4),
        "extrapolated_cohort_count_shared_s": round(cohort_shared.end_to_end_s, 3),
        "extrapolated_cohort_count_mean_s": round(cohort.end_to_end_mean_s, 3),
        "extrapolated_glm_s": round(glm_proj.end_to_end_s, 2),
        "glm_records_per_s_per_core": round(glm_tp), "glm_rounds": glm.rounds,
        "persons": large.persons, "store_rows": total_rows, "store_rows_by_table": large.rows,
        "tile_persons": large.tile_persons, "copies": large.copies,
        "store_build_s": round(large.build_s, 1), "prepared_s": round(prepared_s, 1),
        "threads": threads, "cohort_persons": node["count_persons"],
        "count_s": round(count.seconds, 4), "count_records_scanned": count.records_scanned,
        "count_scan_fraction": round(count.records_scanned / total_rows, 4),
        "glm_s": round(glm.seconds, 3), "glm_records_scanned": glm.records_scanned,
        "glm_n": node["glm_fit"].get("nobs"), "glm_converged": node["glm_fit"].get("converged"),
        "coordination": {k: v for k, v in coordination.items() if k not in ("added_s",
                                                                            "e2e_s")},
        "coordination_shared": {k: v for k, v in shared.items() if k not in ("added_s",
                                                                          "e2e_s")},
        "assumptions": asdict(a),
        "projection_cohort_count": asdict(cohort), "projection_glm": asdict(glm_proj),
    }


def report_tables(r: dict[str, Any]) -> list[Table]:
    node = Table(title=f"one DuckDB node: {r['persons']:,} persons, {r['store_rows']:,} CDM "
                       f"rows ({r['copies']} tiles of {r['tile_persons']:,}), "
                       f"{r['threads']} threads")
    for column in ("analysis", "seconds", "records scanned", "records/s/core"):
        node.add_column(column, justify="left" if column == "analysis" else "right")
    node.add_row(f"cohort count ({r['cohort_persons']} persons)", f"{r['count_s']:.3f}",
                 f"{r['count_records_scanned']:,}", f"{r['records_per_s_per_core']:,}")
    node.add_row(f"GLM logistic, {r['glm_rounds']} rounds (n={r['glm_n']})",
                 f"{r['glm_s']:.2f}", f"{r['glm_records_scanned']:,}",
                 f"{r['glm_records_per_s_per_core']:,}")
    c = r["coordination"]
    coord = "given" if c.get("given") else f"median of {c['studies']} studies"
    p, g = r["projection_cohort_count"], r["projection_glm"]
    a = r["assumptions"]
    proj = Table(title=f"extrapolated: {a['records']:.3g} records, {a['institutions']} "
                       "institutions")
    for column in ("term", "cohort count (s)", f"GLM, {r['glm_rounds']} rounds (s)"):
        proj.add_column(column, justify="left" if column == "term" else "right")
    proj.add_row(f"coordination at {c['nodes']} agents, hub on its own core ({coord})",
                 f"{r['coordination_s_at_100_nodes']:.3f}", "")
    proj.add_row(f"largest node ({p['largest_records']:.3g} records) per round",
                 f"{p['node_largest_s']:.3f}", f"{g['node_largest_s']:.3f}")
    proj.add_row(f"mean node ({p['mean_records']:.3g} records) per round",
                 f"{p['node_mean_s']:.3f}", f"{g['node_mean_s']:.3f}")
    proj.add_row(f"coordination at {a['institutions']} nodes per round",
                 f"{p['coordination_s']:.3f}", f"{g['coordination_s']:.3f}")
    proj.add_row("network per round", f"{p['network_s']:.3f}", f"{g['network_s']:.3f}")
    proj.add_row("end to end (largest institution bounds each round)",
                 f"{r['extrapolated_cohort_count_s']:.2f}", f"{r['extrapolated_glm_s']:.1f}")
    proj.add_row("end to end if every institution were the mean size",
                 f"{r['extrapolated_cohort_count_mean_s']:.2f}",
                 f"{g['end_to_end_mean_s']:.1f}")
    proj.add_row("goal: cohort count < 5 s", "met" if r["goal_met"] else "NOT met", "")
    proj.add_row(f"coordination at {c['nodes']} agents, hub sharing the cores with them",
                 f"{r['coordination_shared_s_at_100_nodes']:.3f}", "")
    proj.add_row("end to end with that coordination (pessimistic)",
                 f"{r['extrapolated_cohort_count_shared_s']:.2f}", "")
    return [node, proj]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Assumptions()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=10_000_000)
    parser.add_argument("--tile-persons", type=int, default=100_000,
                        help="persons of the generated hospital the store is tiled from")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "healthspace-bench-province",
                        help="where the large store is built and kept between runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed cohort counts")
    parser.add_argument("--threads", type=int, default=None,
                        help="DuckDB threads (default: DuckDB's, one per core)")
    parser.add_argument("--coordination-nodes", type=int, default=100)
    parser.add_argument("--coordination-studies", type=int, default=9,
                        help="studies per coordination measurement (the median is used)")
    parser.add_argument("--coordination-s", type=float, default=None,
                        help="use this coordination time instead of measuring it")
    parser.add_argument("--records", type=float, default=d.records)
    parser.add_argument("--institutions", type=int, default=d.institutions)
    parser.add_argument("--largest-share", type=float, default=d.largest_share)
    parser.add_argument("--cores-per-node", type=int, default=d.cores_per_node)
    parser.add_argument("--scan-fraction", type=float, default=d.scan_fraction)
    parser.add_argument("--rtt-ms", type=float, default=d.rtt_s * 1000)
    parser.add_argument("--json", action="store_true", help="also print a JSON summary last")
    args = parser.parse_args(argv)
    if args.persons < 100 or args.tile_persons < 100:
        parser.error("--persons and --tile-persons must be at least 100")
    if not 0 < args.largest_share <= 1 or not 0 < args.scan_fraction <= 1:
        parser.error("--largest-share and --scan-fraction must be in (0, 1]")
    if min(args.repeats, args.coordination_nodes, args.coordination_studies,
           args.institutions, args.cores_per_node) < 1 or args.records <= 0:
        parser.error("counts and --records must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    for out in report_tables(result):
        console.print(out)
    console.print("[bold]model[/]")
    for line in model_text(Assumptions(**result["assumptions"])):
        console.print(f"  • {line}")
    console.print(f"  • measured scan fraction of the cohort count here: "
                  f"{result['count_scan_fraction']:.2f} (the model assumes "
                  f"{args.scan_fraction:g}); GLM: its measured records per round")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
