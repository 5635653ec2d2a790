"""Benchmark: one hub under load — 100 node agents long-polling it, 50 consumers at once.

A real hub (``healthspace hub serve``, uvicorn, SQLite by default or ``--db`` PostgreSQL URL)
on 127.0.0.1; ``--nodes`` light node agents (benchmarks/agents.py: the real node protocol and
runner over small DuckDB stores) in ``--agent-procs`` processes; ``--consumers`` concurrent
consumers, each submitting ``--studies`` cohort counts (over ``--targets`` nodes drawn at
random, or every node) one after another, long-polling each to the end and pausing ``--think``
seconds on average in between (uniform over 0 … 2 × think). Every study's per-node counts are
checked against plain DuckDB SQL over the node's store.

The default workload — 50 analysts each starting a 10-site feasibility count every 30 s on
average, about 1.6 studies (16 tasks) a second offered, nearly 6,000 studies an hour — is far
above what a regional network sees, and leaves the machine headroom; a shorter ``--think``
finds where it saturates. Here the simulated nodes saturate first: a hundred nodes' query,
signing and HTTP work (about 30 ms of CPU per task) share the cores that, in a deployment,
are a hundred machines. ``hub_cpu_ms_per_task`` is the hub's own cost at any load.

Reported: the *added study latency* — a study's end-to-end time (consumer submit → terminal
status seen) minus its slowest node's own time (assignment received → result POST started) —
as p50 / p95 / p99, end-to-end and node times, the hub's CPU use over the measured phase (one
core = 100 %), and every HTTP status seen. Target: p95 added latency < 1 s. Agents, consumers
and hub share this machine's cores, so node time and hub time compete; the node side is
subtracted, the hub side is what is left. By default (two or more cores) the hub runs on core 0
and everything else on the others, as if the hub had a machine of its own and the nodes were
elsewhere; ``--no-pin-hub`` lets all of it share every core, where a burst of node work (a
study's ten tasks at once) also takes CPU from the hub.

With ``--json`` the last stdout line is one JSON object starting with
``{"p50_s", "p95_s", "p99_s", "nodes", "consumers"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agents import (
    AgentPool,
    ConsumerPlan,
    HttpTally,
    StudyRecord,
    TaskRecord,
    added_latencies,
    build_stores,
    check_counts,
    cohort_persons,
    consumer_tokens,
    cpu_seconds,
    enrol_agents,
    percentiles,
    run_consumers,
    wait_published,
)
from rich.console import Console
from rich.table import Table

from healthspace.client.sdk import HubClient
from healthspace.demo_data import showcase_cohort
from healthspace.launch import LocalFederation

console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@dataclass
class BenchHub(LocalFederation):
    """The local federation's hub process, on SQLite in ``workdir`` or on the ``db`` URL."""

    db: str | None = None
    synchronous: str = "full"

    @property
    def db_url(self) -> str:
        sqlite = f"sqlite:///{self.workdir / 'hub.sqlite'}?synchronous={self.synchronous}"
        return self.db or sqlite


@dataclass
class LoadConfig:
    nodes: int = 100
    consumers: int = 50
    studies: int = 3
    think_s: float = 30.0
    targets: int = 10
    stores: int = 10
    persons: int = 400
    agent_procs: int = 2
    poll_wait: float = 20.0
    timeout_s: float = 600.0
    db: str | None = None
    synchronous: str = "full"  # a SQLite hub's synchronous level (healthspace.hub.db.session)
    # The hub process on core 0 and every other process of the run (agents, consumers) on
    # the other cores, as if the hub had a machine of its own; off: all share every core.
    pin_hub: bool = False


@dataclass
class LoadReport:
    config: LoadConfig
    studies: list[StudyRecord]
    tasks: list[TaskRecord]
    consumer_http: HttpTally
    agent_http: HttpTally
    wall_s: float
    hub_cpu_s: float
    agents_cpu_s: float
    problems: list[str]
    setup_s: float = 0.0
    node_stores: dict[str, str] = field(default_factory=dict)  # node name -> its store

    @property
    def added(self) -> list[float]:
        return added_latencies(self.studies, self.tasks)

    def summary(self) -> dict[str, Any]:
        c = self.config
        added = percentiles(self.added)
        e2e = percentiles([s.e2e_s for s in self.studies])
        node = percentiles([t.node_s for t in self.tasks])
        completed = sum(s.status == "completed" for s in self.studies)
        return {
            **{k: round(v, 4) for k, v in added.items()}, "nodes": c.nodes,
            "consumers": c.consumers, "studies": len(self.studies), "completed": completed,
            "studies_planned": c.consumers * c.studies, "tasks": len(self.tasks),
            "targets_per_study": c.targets or c.nodes,
            "e2e_p50_s": round(e2e["p50_s"], 4), "e2e_p95_s": round(e2e["p95_s"], 4),
            "node_p50_s": round(node["p50_s"], 4), "node_p95_s": round(node["p95_s"], 4),
            "added_max_s": round(max(self.added, default=float("nan")), 4),
            "wall_s": round(self.wall_s, 2),
            "studies_per_s": round(len(self.studies) / self.wall_s, 3),
            "tasks_per_s": round(len(self.tasks) / self.wall_s, 2),
            "hub_cpu_pct": round(100 * self.hub_cpu_s / self.wall_s, 1),
            "agents_cpu_pct": round(100 * self.agents_cpu_s / self.wall_s, 1),
            "hub_cpu_ms_per_task": round(1000 * self.hub_cpu_s / max(1, len(self.tasks)), 2),
            "agents_cpu_ms_per_task": round(
                1000 * self.agents_cpu_s / max(1, len(self.tasks)), 2),
            "offered_studies_per_s": round(c.consumers / c.think_s, 3) if c.think_s else None,
            "server_errors": self.consumer_http.server_errors + self.agent_http.server_errors,
            "client_errors": self.consumer_http.client_errors + self.agent_http.client_errors,
            "transport_errors": (self.consumer_http.transport_errors
                                 + self.agent_http.transport_errors),
            "wrong_results": len(self.problems), "target_p95_s": 1.0,
            "target_met": added["p95_s"] < 1.0,
            "db": "postgresql" if c.db else f"sqlite (synchronous={c.synchronous})",
            "setup_s": round(self.setup_s, 1), "pin_hub": c.pin_hub,
            "http_statuses": {str(code): n for code, n in sorted(
                (self.consumer_http.statuses + self.agent_http.statuses).items())},
        }


T = TypeVar("T")


def run_in_own_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh event loop in a thread of its own, so a caller that
    already has a loop in this thread (a test process, a notebook) can run the load too."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_load(config: LoadConfig, root: Path, cohort: dict[str, Any] | None = None) -> LoadReport:
    """Hub + agents + consumers on loopback; everything stopped before returning."""
    cohort = cohort or showcase_cohort()
    t = time.perf_counter()
    stores = build_stores(root / "data", config.stores, config.persons)
    by_store = {str(s): cohort_persons(s, cohort) for s in stores}
    for stale in ("fed", "agents"):  # the stores are kept between runs, never the hub
        shutil.rmtree(root / stale, ignore_errors=True)
    with BenchHub(root / "fed", db=config.db, synchronous=config.synchronous) as hub:
        hub.init_hub()
        hub.start_hub()
        specs = enrol_agents(hub.url, hub.operator_token, config.nodes, stores)
        expected = {s.name: by_store[s.store] for s in specs}
        tokens = consumer_tokens(hub.url, hub.operator_token, config.consumers)
        names = [s.name for s in specs]
        with AgentPool(hub.url, specs, root / "agents", processes=config.agent_procs,
                       poll_wait=config.poll_wait,
                       max_seconds=config.timeout_s + 300) as pool:
            wait_published(hub.url, hub.operator_token, names, timeout=120 + 3 * config.nodes)
            pool.check_alive()
            warm_up(hub.url, tokens[0], names, cohort)
            setup_s = time.perf_counter() - t
            assert hub.hub_process is not None
            pids = pool.pids()
            if config.pin_hub:
                pin(hub.hub_process.pid, [os.getpid(), *pids])
            hub_cpu, agents_cpu = cpu_seconds(hub.hub_process.pid), sum(map(cpu_seconds, pids))
            started = time.perf_counter()
            plan = ConsumerPlan(nodes=names, cohort=cohort, studies=config.studies,
                                think_s=config.think_s, targets=config.targets,
                                max_seconds=config.timeout_s)
            studies, consumer_http = run_in_own_loop(run_consumers(hub.url, tokens, plan))
            wall = time.perf_counter() - started
            hub_cpu = cpu_seconds(hub.hub_process.pid) - hub_cpu
            agents_cpu = sum(map(cpu_seconds, pids)) - agents_cpu
            result = pool.stop()
    measured = {s.study_id for s in studies}
    tasks = [r for r in result.tasks if r.study_id in measured]
    problems = check_counts(studies, expected)
    missing = config.consumers * config.studies - len(studies)
    if missing:
        problems.append(f"{missing} studies were not submitted or not finished in time")
    return LoadReport(config, studies, tasks, consumer_http, result.tally, wall, hub_cpu,
                      agents_cpu, problems, setup_s, {s.name: s.store for s in specs})


def pin(hub_pid: int, others: list[int]) -> None:
    """The hub on core 0, ``others`` on the remaining cores (needs at least two)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("--pin-hub needs at least two cores")
    _affinity(hub_pid, {cores[0]})
    for pid in others:
        _affinity(pid, set(cores[1:]))


def _affinity(pid: int, cores: set[int]) -> None:
    """Every thread of ``pid`` (a process's threads keep their own affinity), and so the
    threads they start later, on ``cores``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cores)


def warm_up(url: str, token: str, names: list[str], cohort: dict[str, Any]) -> None:
    """One study over every node before measuring: each agent's first task pays for its
    imports and caches (not the hub's cost)."""
    with HubClient(url, token, timeout=120) as client:
        view = client.wait(client.submit({"analysis": "cohort_count", "cohort": cohort,
                                          "nodes": names, "title": "warm-up"}).id,
                           timeout=300)
    if view.status.value != "completed":
        raise RuntimeError(f"warm-up study ended {view.status.value}: {view.error}")


def table(report: LoadReport) -> Table:
    s = report.summary()
    c = report.config
    out = Table(title=f"hub load: {c.nodes} node agents ({c.agent_procs} processes), "
                      f"{c.consumers} consumers × {c.studies} studies over "
                      f"{s['targets_per_study']} nodes, hub on {s['db']}")
    out.add_column("measure")
    out.add_column("value", justify="right")
    rows = [
        ("added latency p50 / p95 / p99 (s)",
         f"{s['p50_s']:.3f} / {s['p95_s']:.3f} / {s['p99_s']:.3f}"),
        ("added latency max (s)", f"{s['added_max_s']:.3f}"),
        ("target: p95 added < 1 s", "met" if s["target_met"] else "NOT met"),
        ("end-to-end p50 / p95 (s)", f"{s['e2e_p50_s']:.3f} / {s['e2e_p95_s']:.3f}"),
        ("node time per task p50 / p95 (s)", f"{s['node_p50_s']:.3f} / {s['node_p95_s']:.3f}"),
        ("studies finished / planned (completed)",
         f"{s['studies']} / {s['studies_planned']} ({s['completed']})"),
        ("tasks run", f"{s['tasks']:,}"),
        ("measured wall time (s)", f"{s['wall_s']:.1f}"),
        ("throughput: studies/s, tasks/s", f"{s['studies_per_s']:.2f}, {s['tasks_per_s']:.1f}"),
        ("offered: consumers / think (studies/s, at most)",
         f"{s['offered_studies_per_s']}" if s["offered_studies_per_s"] else "unbounded"),
        ("hub CPU (one core = 100 %); per task",
         f"{s['hub_cpu_pct']:.0f} %; {s['hub_cpu_ms_per_task']:.1f} ms"),
        ("agents' CPU; per task",
         f"{s['agents_cpu_pct']:.0f} %; {s['agents_cpu_ms_per_task']:.1f} ms"),
        ("HTTP 5xx / 4xx / transport errors",
         f"{s['server_errors']} / {s['client_errors']} / {s['transport_errors']}"),
        ("studies with a wrong or missing result", f"{s['wrong_results']}"),
        ("set-up (stores, hub, enrolment, warm-up) (s)", f"{s['setup_s']:.0f}"),
    ]
    for name, value in rows:
        out.add_row(name, value)
    return out


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, LoadConfig]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--consumers", type=int, default=50)
    parser.add_argument("--studies", type=int, default=3, help="studies per consumer")
    parser.add_argument("--think", type=float, default=30.0,
                        help="mean seconds a consumer pauses before each study (uniform over "
                        "0 … 2 × think); shorter offers more load")
    parser.add_argument("--targets", type=int, default=10,
                        help="nodes per study, drawn at random (0: every node); each node's "
                        "simulated work shares this machine's cores with the hub")
    parser.add_argument("--stores", type=int, default=10, help="distinct node stores")
    parser.add_argument("--persons", type=int, default=400, help="persons per store")
    parser.add_argument("--agent-procs", type=int, default=2, help="agent processes")
    parser.add_argument("--poll-wait", type=float, default=20.0, help="node long-poll seconds")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds the consumers may take in all")
    parser.add_argument("--db", default=None, help="hub database URL (default: SQLite)")
    parser.add_argument("--pin-hub", action=argparse.BooleanOptionalAction, default=None,
                        help="run the hub on core 0 and agents and consumers on the others, as "
                        "if the nodes were other machines (default: on with two or more "
                        "cores); --no-pin-hub lets everything share every core")
    parser.add_argument("--sqlite-synchronous", choices=("full", "normal"), default="full",
                        help="the SQLite hub's synchronous level (docs/operations.md)")
    parser.add_argument("--workdir", type=Path, default=None, help="kept if given")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary last")
    args = parser.parse_args(argv)
    if min(args.nodes, args.consumers, args.studies, args.stores, args.agent_procs) < 1:
        parser.error("--nodes, --consumers, --studies, --stores, --agent-procs must be ≥ 1")
    if not 0 <= args.targets <= args.nodes:
        parser.error("--targets must be between 0 and --nodes")
    config = LoadConfig(nodes=args.nodes, consumers=args.consumers, studies=args.studies,
                        think_s=args.think, targets=args.targets, stores=args.stores,
                        persons=args.persons, agent_procs=args.agent_procs,
                        poll_wait=args.poll_wait, timeout_s=args.timeout, db=args.db,
                        synchronous=args.sqlite_synchronous,
                        pin_hub=len(os.sched_getaffinity(0)) >= 2 if args.pin_hub is None
                        else args.pin_hub)
    return args, config


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-load-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        report = run_load(config, root)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    console.print(table(report))
    console.print("[dim]added latency = end-to-end (consumer submit → terminal status seen) − "
                  "the study's slowest node time (assignment received → result POST started)"
                  "[/]")
    for problem in report.problems[:10]:
        console.print(f"[red]{problem}[/]")
    if args.json:
        print(json.dumps(report.summary()))
    if report.problems or report.summary()["server_errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
