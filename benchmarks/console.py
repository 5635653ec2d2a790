"""Benchmark: the web console's pages against the API request that answers the same question.

A real hub (uvicorn) and ``--sites`` real node processes on small synthetic stores (open,
auto-approved L2 policies with prices), plus one gated node whose data steward must approve:
``--studies`` cohort counts are submitted through the SDK and run by the nodes for real, and
``--pending`` more wait in the gated node's approvals inbox. Then, with httpx, each page is
fetched ``--repeats`` times warm by a user signed in through the console's own sign-in form
(session cookie), alternating with the API request that answers the same question for the
same user (bearer token); every response must be 200. Reported per pair: p50 and p95 in ms,
the page/API ratio of the p50s, response bytes, and the first (cold) request of each.

With ``--json`` the last line on stdout is one JSON object with every number, the number of
studies and the machine's core count; the table and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.synth import generate
from healthspace.client.sdk import HubClient
from healthspace.demo_data import showcase_cohort
from healthspace.launch import LocalFederation

# Wide enough for the table when stderr is a file or a pipe (rich would assume 80 columns).
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
PRICES = {"per_study": 100, "per_person": 0.3, "per_compute_second": 2}
OPEN_POLICY = {"level": "L2", "approval_mode": "auto", "allowed_purposes": ["research"],
               "prices": PRICES}
GATED_POLICY = {**OPEN_POLICY, "approval_mode": "single"}  # one data-steward approval
GATED = "gated_site"
CHART = "sites"  # the cohort_count chart (hub/console/charts.py, _cohort_count)


@dataclass(frozen=True)
class Pair:
    """One question asked twice: as a console page and as the API request answering it."""

    name: str
    role: str  # whose session cookie and whose bearer token
    page: str
    api: str


@dataclass
class Users:
    tokens: dict[str, str]  # role -> API token


def fail(message: str) -> NoReturn:
    console.print(f"[red]console benchmark failed:[/] {message}")
    raise SystemExit(1)


# --- the federation ------------------------------------------------------------------------


def build(fed: LocalFederation, data: Path, sites: int) -> Users:
    """Hub, ``sites`` open hospital nodes and one gated node; a user per role, with tokens."""
    fed.init_hub()
    fed.start_hub()
    names = [f"hospital_{k + 1}" for k in range(sites)]
    for name in names:
        store = fed.workdir / "nodes" / f"{name}.duckdb"
        ingest_dir(store, data / name)
        fed.ensure_org(name, "hospital")
        fed.add_node(name, name, store, policy=OPEN_POLICY)
    gated = fed.workdir / "nodes" / f"{GATED}.duckdb"
    ingest_dir(gated, data / names[0])
    fed.ensure_org("gated_lab", "data_centre")
    fed.add_node(GATED, "gated_lab", gated, policy=GATED_POLICY)
    fed.wait_nodes_ready(timeout=120)
    fed.ensure_org("pharma", "consumer")
    with fed.operator() as op:
        op.add_user("analyst", "pharma", "consumer")
        op.add_user("steward", "gated_lab", "data_holder_admin")
        op.add_user("auditor", "operator", "auditor")
        tokens = {"operator": fed.operator_token,
                  "consumer": op.issue_token("analyst").token,
                  "data_holder_admin": op.issue_token("steward").token,
                  "auditor": op.issue_token("auditor").token}
        op.set_account("pharma", deposit=10_000_000)  # a limited account: quota-checked
    return Users(tokens)


def run_studies(url: str, token: str, names: list[str], studies: int, pending: int,
                timeout: float) -> tuple[list[int], float]:
    """Submit the studies, wait for every auto-approved one to finish; their ids, and the
    seconds the submissions took."""
    cohort = showcase_cohort()
    ids: list[int] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with HubClient(url, token) as client, Progress(*columns, console=console) as bar:
        submitted = bar.add_task("submit", total=studies + pending)
        t = time.perf_counter()
        for i in range(studies):
            view = client.submit({"analysis": "cohort_count", "cohort": cohort,
                                  "nodes": names, "title": f"bench feasibility {i + 1}"})
            ids.append(view.id)
            bar.advance(submitted)
        for i in range(pending):
            view = client.submit({"analysis": "cohort_count", "cohort": cohort,
                                  "nodes": [GATED], "title": f"bench awaiting {i + 1}"})
            if view.status.value != "awaiting_approval":
                fail(f"study {view.id} at {GATED} is {view.status.value}, "
                     "not awaiting_approval")
            bar.advance(submitted)
        submit_s = time.perf_counter() - t
        done = bar.add_task("run on the nodes", total=studies)
        deadline = time.monotonic() + timeout
        for study_id in ids:
            view = client.wait(study_id, timeout=max(deadline - time.monotonic(), 1.0))
            if view.status.value != "completed":
                fail(f"study {study_id} ended {view.status.value}: {view.error}")
            bar.advance(done)
    return ids, submit_s


# --- measuring -----------------------------------------------------------------------------


def sign_in(url: str, token: str) -> httpx.Client:
    """A client holding a console session, made through the sign-in form (method=token)."""
    client = httpx.Client(base_url=url, timeout=120.0, follow_redirects=False)
    form = client.get("/console/sign-in")
    found = re.search(r'name="form_token" value="([^"]+)"', form.text)
    if form.status_code != 200 or found is None:
        fail(f"GET /console/sign-in: {form.status_code}, no form token")
    answer = client.post("/console/sign-in", data={
        "form_token": found.group(1), "method": "token", "token": token,
        "next": "/console/dashboard"})
    if answer.status_code != 303 or "hs_console" not in client.cookies:
        fail(f"POST /console/sign-in: {answer.status_code}, no session cookie")
    return client


def fetch(client: httpx.Client, path: str) -> tuple[float, int]:
    t = time.perf_counter()
    response = client.get(path)
    body = response.content  # read in full: the time includes the body
    elapsed = time.perf_counter() - t
    if response.status_code != 200:
        fail(f"GET {path}: {response.status_code} {response.text[:300]!r}")
    return elapsed, len(body)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]


def summary(cold: float, times: list[float], size: int, path: str) -> dict[str, Any]:
    return {"path": path, "p50_ms": round(1000 * statistics.median(times), 2),
            "p95_ms": round(1000 * quantile(times, 0.95), 2),
            "mean_ms": round(1000 * statistics.fmean(times), 2),
            "cold_ms": round(1000 * cold, 2), "bytes": size}


def measure(pair: Pair, pages: httpx.Client, api: httpx.Client, repeats: int,
            warmup: int) -> dict[str, Any]:
    """The first request of each (cold), ``warmup`` more, then ``repeats`` alternating."""
    page_cold, _ = fetch(pages, pair.page)
    api_cold, _ = fetch(api, pair.api)
    for _ in range(warmup):
        fetch(pages, pair.page)
        fetch(api, pair.api)
    page_t, api_t, page_bytes, api_bytes = [], [], 0, 0
    for _ in range(repeats):
        elapsed, page_bytes = fetch(pages, pair.page)
        page_t.append(elapsed)
        elapsed, api_bytes = fetch(api, pair.api)
        api_t.append(elapsed)
    page, answer = summary(page_cold, page_t, page_bytes, pair.page), \
        summary(api_cold, api_t, api_bytes, pair.api)
    return {"role": pair.role, "page": page, "api": answer,
            "ratio_p50": round(page["p50_ms"] / answer["p50_ms"], 2)}


def pairs(study_id: int, period: str) -> list[Pair]:
    base = f"/console/studies/{study_id}"
    return [
        Pair("dashboard (KPI tiles)", "operator", "/console/dashboard",
             f"/api/v1/kpi?period={period}"),
        Pair("catalog", "consumer", "/console/catalog", "/api/v1/nodes?limit=500"),
        Pair("studies list", "consumer", "/console/studies", "/api/v1/studies?limit=200"),
        Pair("study detail", "consumer", base, f"/api/v1/studies/{study_id}"),
        Pair("result chart (svg)", "consumer", f"{base}/chart/{CHART}.svg",
             f"/api/v1/studies/{study_id}"),
        Pair("code search ICD10:E1", "consumer", "/console/studies/new/codes?q=ICD10:E1",
             "/api/v1/nodes?limit=500"),
        Pair("audit explorer", "auditor", "/console/audit",
             "/api/v1/audit/entries?start=1&limit=100"),
        Pair("approvals inbox", "data_holder_admin", "/console/approvals",
             "/api/v1/approvals?status=pending&limit=200"),
        Pair("billing (consumer invoice)", "consumer", "/console/billing",
             f"/api/v1/billing/statement?period={period}"),
        Pair("billing (operator platform)", "operator", "/console/billing",
             f"/api/v1/billing/statement?period={period}"),
    ]


def bench(url: str, users: Users, study_id: int, repeats: int, warmup: int
          ) -> tuple[dict[str, dict[str, Any]], int]:
    period = datetime.now(UTC).strftime("%Y-%m")
    sessions = {role: sign_in(url, token) for role, token in users.tokens.items()}
    apis = {role: httpx.Client(base_url=url, timeout=120.0,
                               headers={"Authorization": f"Bearer {token}"})
            for role, token in users.tokens.items()}
    try:
        results = {}
        todo = pairs(study_id, period)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("measure", total=len(todo))
            for pair in todo:
                bar.update(task, description=f"measure {pair.name}")
                results[pair.name] = measure(pair, sessions[pair.role], apis[pair.role],
                                             repeats, warmup)
                bar.advance(task)
        head = apis["auditor"].get("/api/v1/audit/head")
        entries = int(head.json()["size"]) if head.status_code == 200 else 0
    finally:
        for client in (*sessions.values(), *apis.values()):
            client.close()
    return results, entries


# --- report --------------------------------------------------------------------------------


def table(results: dict[str, dict[str, Any]], title: str) -> Table:
    out = Table(title=title)
    for column in ("page", "as", "page p50 / p95 ms", "API p50 / p95 ms", "page/API p50",
                   "page bytes", "API bytes", "cold page / API ms", "API request"):
        out.add_column(column, justify="left" if column in ("page", "as", "API request")
                       else "right")
    for name, r in results.items():
        page, api = r["page"], r["api"]
        out.add_row(name, r["role"], f"{page['p50_ms']:.1f} / {page['p95_ms']:.1f}",
                    f"{api['p50_ms']:.1f} / {api['p95_ms']:.1f}", f"{r['ratio_p50']:.2f}",
                    f"{page['bytes']:,}", f"{api['bytes']:,}",
                    f"{page['cold_ms']:.0f} / {api['cold_ms']:.0f}", api["path"])
    return out


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: processes stopped, temp dir removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200, help="completed studies (N)")
    parser.add_argument("--pending", type=int, default=20,
                        help="studies left awaiting approval at the gated node")
    parser.add_argument("--repeats", type=int, default=20, help="warm requests measured")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured requests first")
    parser.add_argument("--sites", type=int, default=3, help="open hospital nodes")
    parser.add_argument("--persons", type=int, default=3_000, help="persons per site")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds to wait for the studies to finish")
    parser.add_argument("--workdir", type=Path, default=None, help="kept if given")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary last")
    args = parser.parse_args()
    if args.studies < 1 or args.repeats < 1 or args.pending < 0:
        parser.error("--studies and --repeats must be at least 1, --pending at least 0")
    signal.signal(signal.SIGTERM, _terminated)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-console-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        t = time.perf_counter()
        generate(root / "data", sites=args.sites, persons=args.persons, seed=5)
        with LocalFederation(root / "fed", poll_wait=20.0) as fed:
            users = build(fed, root / "data", args.sites)
            setup_s = time.perf_counter() - t
            t = time.perf_counter()
            names = [f"hospital_{k + 1}" for k in range(args.sites)]
            ids, submit_s = run_studies(fed.url, users.tokens["consumer"], names, args.studies,
                              args.pending, args.timeout)
            studies_s = time.perf_counter() - t
            results, entries = bench(fed.url, users, ids[len(ids) // 2], args.repeats,
                                     args.warmup)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    cores = os.cpu_count() or 1
    console.print(table(results, f"console pages vs the API: {args.studies:,} studies (+"
                                 f"{args.pending} awaiting approval), {args.sites} sites × "
                                 f"{args.persons:,} persons, {entries:,} ledger entries; "
                                 f"{args.repeats} warm requests each, {cores} cores"))
    console.print("[dim]warm chart requests are served from the hub's drawing cache "
                  "(charts.render); the cold column is the first draw[/]")
    console.print(f"[dim]set-up {setup_s:.0f}s, {args.studies:,} studies run in "
                  f"{studies_s:.0f}s (submitting {submit_s:.0f}s), "
                  f"total {time.perf_counter() - started:.0f}s[/]")
    if args.json:
        print(json.dumps({"studies": args.studies, "pending": args.pending, "cores": cores,
                          "repeats": args.repeats, "warmup": args.warmup, "sites": args.sites,
                          "persons": args.persons, "ledger_entries": entries,
                          "setup_s": round(setup_s, 1), "studies_s": round(studies_s, 1),
                          "submit_s": round(submit_s, 1),
                          "python": sys.version.split()[0],
                          "pages": results}))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the processes and the temp dir are gone already
        console.print("[yellow]interrupted[/]")
        raise SystemExit(130) from None
