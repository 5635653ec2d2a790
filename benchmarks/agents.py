"""Load machinery: many lightweight node agents and consumers speaking the real hub protocol.

A *light agent* is a node without its state file: it enrols with its own Ed25519 key, pins the
hub key, publishes a signed catalogue (of its real DuckDB store) and an auto-approving policy,
long-polls ``/node/tasks/next``, checks the hub's signature on each assignment, runs it with the
node's own runner (:func:`healthspace.node.runner.execute_task`, so ``run_local`` on the store,
disclosure control and the meter are the real ones) and posts the result in a signed envelope.
What it leaves out is what lives in a node's state file (consent, the node ledger, ε budgets,
secure-aggregation prekeys): the hub's side of the protocol is exercised in full.

Many agents share one asyncio process (``python benchmarks/agents.py --spec FILE --out FILE``,
started by :class:`AgentPool`); a consumer is an async loop that submits a study, long-polls it
to the end, thinks, and submits the next. Every loop is bounded in count and in time.

Timing vocabulary (all wall-clock seconds, comparable across the processes of one machine):
``node_s`` of a task is the agent's own time, from receiving the assignment to starting the
result POST (queueing for a compute thread, the analysis, signing); a study's *end-to-end* time
is from the consumer starting its submit to seeing the terminal status; its *added latency* is
end-to-end minus the largest ``node_s`` among its tasks — the coordination the hub adds on top
of the slowest node's own work (one-round studies; for several rounds, per-round maxima add).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from nacl.signing import SigningKey

API = "/api/v1"
HERE = Path(__file__).resolve().parent
OPEN_POLICY: dict[str, Any] = {"level": "L1", "allowed_purposes": ["research"]}
TERMINAL = {"completed", "partial", "failed", "rejected", "cancelled"}


# --- set-up: stores, enrolment ------------------------------------------------------------


def build_stores(root: Path, count: int, persons: int, seed: int = 11) -> list[Path]:
    """``count`` small synthetic hospitals ingested as DuckDB stores (kept if present)."""
    from healthspace.cdm.ingest import ingest_dir
    from healthspace.cdm.synth import generate

    stores = [root / "stores" / f"hospital_{k + 1}.duckdb" for k in range(count)]
    if all(s.exists() for s in stores):
        return stores
    data = root / "synth"
    generate(data, sites=count, persons=persons, seed=seed)
    for k, store in enumerate(stores):
        store.unlink(missing_ok=True)
        ingest_dir(store, data / f"hospital_{k + 1}")
    return stores


def cohort_persons(store: Path, cohort: dict[str, Any]) -> int:
    """The cohort's size at one store by plain DuckDB SQL (the compiled cohort, no analysis
    code, no HTTP): the reference the federated counts are checked against."""
    import duckdb

    from healthspace.cohort.compiler import compile_cohort
    from healthspace.cohort.models import load_cohort

    compiled = compile_cohort(load_cohort(cohort))
    con = duckdb.connect(str(store), read_only=True)
    try:
        row = con.execute(f"SELECT count(*) FROM ({compiled.sql})", compiled.params).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


@dataclass
class AgentSpec:
    """What one light agent needs: its name, node token, store and signing key (hex)."""

    name: str
    token: str
    store: str
    key: str


def enrol_agents(url: str, operator_token: str, count: int, stores: list[Path],
                 prefix: str = "node") -> list[AgentSpec]:
    """One hospital organisation and one enrolled node (with a fresh key) per agent; agent
    ``i`` reads store ``i mod len(stores)``."""
    from healthspace.client.sdk import HubClient

    specs = []
    with HubClient(url, operator_token) as op:
        for i in range(count):
            name = f"{prefix}_{i + 1:03d}"
            key = SigningKey.generate()
            op.add_org(f"{name}_org", "hospital")
            token = op.enroll_node(name, f"{name}_org", key.verify_key.encode().hex()).token
            specs.append(AgentSpec(name, token, str(stores[i % len(stores)]),
                                   bytes(key).hex()))
    return specs


def wait_published(url: str, operator_token: str, names: list[str], timeout: float) -> None:
    """Until every named node has published its catalogue."""
    from healthspace.client.sdk import HubClient

    deadline = time.monotonic() + timeout
    wanted = set(names)
    with HubClient(url, operator_token) as op:
        while time.monotonic() < deadline:
            listed = op.http.request("GET", f"{API}/nodes", params={"limit": 500}).json()
            if wanted <= {n["name"] for n in listed if n.get("catalog")}:
                return
            time.sleep(0.2)
    raise RuntimeError(f"agents did not publish within {timeout:.0f}s")


# --- measuring --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (psutil when installed, else /proc)."""
    try:
        import psutil  # type: ignore[import-untyped]

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 (linear interpolation between order statistics)."""
    if not values:
        return {"p50_s": float("nan"), "p95_s": float("nan"), "p99_s": float("nan")}
    ordered = sorted(values)
    if len(ordered) == 1:
        return {f"p{q}_s": ordered[0] for q in (50, 95, 99)}
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_s": cuts[49], "p95_s": cuts[94], "p99_s": cuts[98]}


@dataclass
class TaskRecord:
    node: str
    task_id: int
    study_id: int
    round: int
    status: str
    received: float  # wall clock
    posted: float  # the result POST started
    acked: float
    compute_s: float  # run_local's own seconds (the meter)
    records_scanned: int

    @property
    def node_s(self) -> float:
        return self.posted - self.received


@dataclass
class StudyRecord:
    consumer: int
    study_id: int
    submitted: float  # wall clock: the submit POST started
    done: float  # the terminal status was seen
    status: str
    result: dict[str, Any] | None
    nodes: list[str]
    polls: int = 0

    @property
    def e2e_s(self) -> float:
        return self.done - self.submitted


@dataclass
class HttpTally:
    """Responses by status class, and transport errors, seen by one side."""

    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0

    def add(self, status: int) -> None:
        self.statuses[status] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    @property
    def client_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if 400 <= s < 500)

    def merge(self, other: HttpTally) -> None:
        self.statuses.update(other.statuses)
        self.transport_errors += other.transport_errors


def added_latencies(studies: list[StudyRecord], tasks: list[TaskRecord]) -> list[float]:
    """Each finished study's end-to-end time minus its slowest node's own time (per round)."""
    by_study: dict[int, dict[int, float]] = {}
    for t in tasks:
        rounds = by_study.setdefault(t.study_id, {})
        rounds[t.round] = max(rounds.get(t.round, 0.0), t.node_s)
    return [s.e2e_s - sum(by_study.get(s.study_id, {}).values()) for s in studies
            if s.status in TERMINAL]


# --- the light agent --------------------------------------------------------------------


class LightAgent:
    """One node: real keys, real store, real runner; no state file (see the module doc)."""

    def __init__(self, spec: AgentSpec, url: str, poll_wait: float, tally: HttpTally) -> None:
        from healthspace.cdm.store import open_store

        self.spec = spec
        self.key = SigningKey(bytes.fromhex(spec.key))
        self.http = httpx.AsyncClient(base_url=url, timeout=poll_wait + 30,
                                      headers={"Authorization": f"Bearer {spec.token}"})
        self.con = open_store(Path(spec.store), read_only=True)
        self.con.execute("SET threads TO 1")  # a hundred small nodes share this machine's cores
        self.poll_wait = poll_wait
        self.tally = tally
        self.node_id = 0
        self.hub_keys: list[str] = []
        self.records: list[TaskRecord] = []

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        self.tally.add(response.status_code)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response

    def _seal(self, kind: str, payload: dict[str, Any], **ids: Any) -> dict[str, Any]:
        from healthspace.core.envelope import seal

        return seal(kind, payload, self.key, node_id=self.node_id, **ids).model_dump(
            mode="json")

    async def start(self) -> None:
        """Identify, pin the hub key (trust on first use, then vouched rotations), publish."""
        from healthspace import __version__
        from healthspace.cdm.store import catalog
        from healthspace.core.envelope import verify_rotation
        from healthspace.governance.policy import load_policy

        self.node_id = int((await self._call("GET", f"{API}/me")).json()["id"])
        info = (await self._call("GET", f"{API}/hub/key")).json()
        pinned = [info["rotations"][0]["old_key"] if info["rotations"] else info["public_key"]]
        for statement in info["rotations"]:
            if statement["old_key"] in pinned:
                pinned.append(verify_rotation(statement))
        if info["public_key"] not in pinned:
            raise RuntimeError("the hub's key is not vouched for by the pinned key")
        self.hub_keys = pinned
        cat = catalog(self.con).model_copy(update={
            "public_key": self.key.verify_key.encode().hex(), "software_version": __version__})
        await self._call("PUT", f"{API}/node/catalog",
                         json=self._seal("catalog", cat.model_dump(mode="json")))
        policy = load_policy(OPEN_POLICY).model_dump(mode="json")
        await self._call("PUT", f"{API}/node/policy",
                         json=self._seal("policy", {"policy": policy}))

    def _execute(self, assignment: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        from healthspace.node.runner import execute_task

        run = execute_task(Path(self.spec.store), assignment, site=self.spec.name,
                           connection=self.con)
        return run.result.model_dump(mode="json"), run.meter.model_dump(mode="json")

    async def _handle(self, body: dict[str, Any]) -> None:
        from healthspace.core.envelope import verify_assignment
        from healthspace.core.models import TaskAssignment

        received = time.time()
        verify_assignment(body, self.hub_keys)
        assignment = TaskAssignment.model_validate(body)
        result, meter = await asyncio.to_thread(self._execute, assignment)
        for attempt in range(5):  # a fresh nonce on every attempt, as the node agent does
            envelope = self._seal("task.result", result, study_id=assignment.study_id,
                                  round=assignment.round, meter=meter)
            posted = time.time()
            try:
                await self._call("POST", f"{API}/node/tasks/{assignment.task_id}/result",
                                 json=envelope)
                break
            except (httpx.TransportError, RuntimeError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        self.records.append(TaskRecord(
            node=self.spec.name, task_id=assignment.task_id, study_id=assignment.study_id,
            round=assignment.round, status=result["status"], received=received, posted=posted,
            acked=time.time(), compute_s=float(meter["seconds"]),
            records_scanned=int(meter["records_scanned"])))

    async def run(self, stop: asyncio.Event) -> None:
        """Long-poll and handle tasks until ``stop``; errors back off and retry."""
        while not stop.is_set():
            try:
                response = await self._call("GET", f"{API}/node/tasks/next",
                                            params={"wait": self.poll_wait})
                if response.status_code == 200 and response.content:
                    await self._handle(response.json())
            except httpx.TransportError:
                self.tally.transport_errors += 1
                await asyncio.sleep(0.2 + random.random() * 0.3)
            except Exception as exc:  # an error reply or a bad assignment: report, go on
                print(f"{self.spec.name}: {type(exc).__name__}: {exc}"[:500], flush=True)
                await asyncio.sleep(0.2 + random.random() * 0.3)

    async def close(self) -> None:
        await self.http.aclose()
        self.con.close()


async def serve_agents(specs: list[AgentSpec], url: str, poll_wait: float, max_seconds: float,
                       stop: asyncio.Event) -> tuple[list[TaskRecord], HttpTally]:
    """Run every agent until ``stop`` or ``max_seconds``; their task records and tally."""
    tally = HttpTally()
    agents = [LightAgent(spec, url, poll_wait, tally) for spec in specs]
    try:
        for batch in range(0, len(agents), 10):  # a modest burst of start-up calls
            await asyncio.gather(*(a.start() for a in agents[batch:batch + 10]))
        loops = [asyncio.create_task(a.run(stop)) for a in agents]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max_seconds)
        stop.set()
        for loop in loops:
            loop.cancel()  # an open long-poll ends now, not after its wait
        await asyncio.gather(*loops, return_exceptions=True)
    finally:
        for agent in agents:
            await agent.close()
    return [r for a in agents for r in a.records], tally


def agent_main(argv: list[str] | None = None) -> None:
    """Child-process entry: run the agents in ``--spec`` until SIGTERM, write ``--out``."""
    parser = argparse.ArgumentParser(description="light node agents (one process); started "
                                     "by load.py and province.py through AgentPool")
    parser.add_argument("--spec", type=Path, help="agents to run (written by AgentPool)")
    parser.add_argument("--out", type=Path, help="where their task records go")
    args = parser.parse_args(argv)
    if args.spec is None or args.out is None:  # e.g. `make bench`, which runs every script
        print("agents.py is the load machinery of benchmarks/load.py and province.py; "
              "run those")
        return
    spec = json.loads(args.spec.read_text())
    from healthspace.analyses import registry

    registry.names()  # import every analysis before the first task, as the node agent does

    async def main() -> tuple[list[TaskRecord], HttpTally]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=int(spec["threads"])))
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        return await serve_agents([AgentSpec(**a) for a in spec["agents"]], spec["url"],
                                  float(spec["poll_wait"]), float(spec["max_seconds"]), stop)

    started = time.process_time()
    records, tally = asyncio.run(main())
    args.out.write_text(json.dumps({
        "tasks": [asdict(r) for r in records], "statuses": dict(tally.statuses),
        "transport_errors": tally.transport_errors,
        "cpu_s": time.process_time() - started}))


@dataclass
class PoolResult:
    tasks: list[TaskRecord]
    tally: HttpTally
    cpu_s: float


class AgentPool:
    """``len(specs)`` light agents spread over ``processes`` child processes."""

    def __init__(self, url: str, specs: list[AgentSpec], workdir: Path, *, processes: int = 2,
                 poll_wait: float = 20.0, max_seconds: float = 900.0, threads: int = 4) -> None:
        self.url, self.specs, self.workdir = url, specs, workdir
        self.processes = max(1, min(processes, len(specs)))
        self.poll_wait, self.max_seconds, self.threads = poll_wait, max_seconds, threads
        self.children: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for p in range(self.processes):
            part = self.specs[p::self.processes]
            spec_file = self.workdir / f"agents-{p}.json"
            spec_file.touch(mode=0o600)  # node tokens and keys: owner only
            spec_file.write_text(json.dumps({
                "url": self.url, "poll_wait": self.poll_wait, "max_seconds": self.max_seconds,
                "threads": self.threads, "agents": [asdict(s) for s in part]}))
            out = self.workdir / f"agents-{p}.out.json"
            out.unlink(missing_ok=True)
            log = open(self.workdir / f"agents-{p}.log", "ab")  # noqa: SIM115 - the child's
            child = subprocess.Popen(
                [sys.executable, str(HERE / "agents.py"), "--spec", str(spec_file),
                 "--out", str(out)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.children.append((child, out))

    def pids(self) -> list[int]:
        return [child.pid for child, _ in self.children]

    def check_alive(self) -> None:
        for child, _ in self.children:
            if child.poll() is not None:
                raise RuntimeError(f"an agent process exited early ({child.returncode}); see "
                                   f"{self.workdir}/agents-*.log")

    def stop(self, timeout: float = 30.0) -> PoolResult:
        """SIGTERM every child, wait for it, gather what it wrote."""
        for child, _ in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        tasks: list[TaskRecord] = []
        tally, cpu = HttpTally(), 0.0
        for child, out in self.children:
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if not out.exists():
                continue
            data = json.loads(out.read_text())
            tasks += [TaskRecord(**t) for t in data["tasks"]]
            tally.merge(HttpTally(Counter({int(k): v for k, v in data["statuses"].items()}),
                                  int(data["transport_errors"])))
            cpu += float(data["cpu_s"])
        self.children = []
        return PoolResult(tasks, tally, cpu)

    def __enter__(self) -> AgentPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.children:
            self.stop()


# --- consumers --------------------------------------------------------------------------


@dataclass
class ConsumerPlan:
    """What the consumers do: ``studies`` each, ``think_s`` mean pause between them (uniform
    0..2×), every study a cohort count over ``targets`` nodes drawn at random from ``nodes``."""

    nodes: list[str]
    cohort: dict[str, Any]
    studies: int = 4
    think_s: float = 2.0
    targets: int = 0  # 0: every node
    max_seconds: float = 600.0
    seed: int = 1


async def _consumer(k: int, url: str, token: str, plan: ConsumerPlan, deadline: float,
                    tally: HttpTally, out: list[StudyRecord]) -> None:
    rng = random.Random(plan.seed * 1000 + k)
    async with httpx.AsyncClient(base_url=url, timeout=60.0,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(plan.studies):
            await asyncio.sleep(rng.uniform(0, 2 * plan.think_s))
            if time.time() >= deadline:
                return
            nodes = plan.nodes if not plan.targets else rng.sample(plan.nodes, plan.targets)
            body = {"analysis": "cohort_count", "cohort": plan.cohort, "nodes": nodes,
                    "title": f"load consumer {k} study {i + 1}"}
            submitted = time.time()
            try:
                response = await http.post(f"{API}/studies", json=body)
                tally.add(response.status_code)
                if response.status_code >= 400:
                    continue
                view, polls = response.json(), 0
                while view["status"] not in TERMINAL and time.time() < deadline:
                    wait = max(0.1, min(20.0, deadline - time.time()))
                    response = await http.get(f"{API}/studies/{view['id']}",
                                              params={"wait": wait}, timeout=wait + 30)
                    tally.add(response.status_code)
                    polls += 1
                    if response.status_code < 400:
                        view = response.json()
            except httpx.TransportError:
                tally.transport_errors += 1
                continue
            out.append(StudyRecord(consumer=k, study_id=int(view["id"]), submitted=submitted,
                                   done=time.time(), status=view["status"],
                                   result=view.get("result"), nodes=nodes, polls=polls))


async def run_consumers(url: str, tokens: list[str], plan: ConsumerPlan
                        ) -> tuple[list[StudyRecord], HttpTally]:
    """One consumer loop per token, all at once; bounded by ``plan.studies`` and time."""
    tally, out = HttpTally(), []
    deadline = time.time() + plan.max_seconds
    await asyncio.gather(*(_consumer(k, url, token, plan, deadline, tally, out)
                           for k, token in enumerate(tokens)))
    return out, tally


def consumer_tokens(url: str, operator_token: str, count: int) -> list[str]:
    """``count`` consumer users (one pharma organisation), a token each."""
    from healthspace.client.sdk import HubClient

    with HubClient(url, operator_token) as op:
        op.add_org("load_pharma", "consumer")
        tokens = []
        for k in range(count):
            op.add_user(f"analyst_{k + 1:03d}", "load_pharma", "consumer")
            tokens.append(op.issue_token(f"analyst_{k + 1:03d}").token)
    return tokens


def check_counts(studies: list[StudyRecord], expected: dict[str, int], k: int = 10
                 ) -> list[str]:
    """Every study completed with each node's released count equal to the reference."""
    from healthspace.privacy.disclosure import release_count

    problems = []
    for s in studies:
        if s.status != "completed" or s.result is None:
            problems.append(f"study {s.study_id}: {s.status}")
            continue
        want = {n: release_count(expected[n], k) for n in s.nodes}
        if s.result["sites"] != want:
            problems.append(f"study {s.study_id}: sites {s.result['sites']} != {want}")
        total = sum(v for v in want.values() if isinstance(v, int))
        if s.result["total"] != total:
            problems.append(f"study {s.study_id}: total {s.result['total']} != {total}")
    return problems


if __name__ == "__main__":
    agent_main()
