"""The main job: synthetic hospitals and a payer, a real hub and nodes on loopback, a study.

The study goes through the whole governance path: each node publishes its own usage policy,
patients' consent is loaded at the nodes, the hub pre-checks, the hospitals' data stewards
approve (one with an ethics reference), the nodes re-check and run, and afterwards every
ledger is verified and cross-checked. The federated total is compared with hand-written SQL
over the pooled files (``demo_data``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthspace.auditing import crosscheck_files, verify_hub, verify_node
from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import state_path
from healthspace.client.sdk import HubClient
from healthspace.core.metering import AccountView, MeterList, Statement
from healthspace.core.models import StudyView
from healthspace.demo_data import (
    CONSUMER_CREDIT,
    CONSUMER_DEPOSIT,
    POLICIES,
    PURPOSE,
    pooled_showcase_count,
    showcase_cohort,
    write_consent,
)
from healthspace.launch import LocalFederation
from healthspace.node import consent as node_consent
from healthspace.node.state import NodeState

CONSUMER_ORG = "pharma_demo"
CONSUMER_USER = "analyst"
AUDITOR_USER = "auditor"
OPERATOR_ORG = "operator"  # the organisation `hub init` creates for the space operator
IRB_REFERENCE = "IRB-2026-117"


@dataclass
class DemoResult:
    workdir: Path
    hub_url: str
    studies: list[StudyView]
    pooled_count: int
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    meters: MeterList | None = None
    platform: Statement | None = None
    invoice: Statement | None = None
    account: AccountView | None = None
    kpi: dict[str, Any] = field(default_factory=dict)

    def role_tokens(self) -> dict[str, str]:
        """One console sign-in token per role: operator, consumer, a steward, the auditor."""
        stewards = sorted(name for name in self.tokens if name.startswith("steward_"))
        found = {"operator": self.tokens.get("operator"),
                 "consumer": self.tokens.get(CONSUMER_USER),
                 "data_holder_admin": self.tokens.get(stewards[0]) if stewards else None,
                 "auditor": self.tokens.get(AUDITOR_USER)}
        return {role: token for role, token in found.items() if token}

    def settlement(self) -> dict[str, Any]:
        """Money in and out over the demo's month: invoiced = earned + platform fee."""
        if self.platform is None:
            return {}
        t = self.platform.totals
        return {"currency": self.platform.currency, "period": self.platform.period,
                "invoiced_total": t["invoiced"], "earned_total": t["earned"],
                "platform_fee": t["platform_fee"], "balanced": t["balanced"],
                "fee_rate": self.platform.fee_rate, "by_consumer": t["by_consumer"],
                "by_holder": t["by_holder"],
                "account": self.account.model_dump(mode="json") if self.account else None}

    def metered(self) -> bool:
        """Whether every task of every study has its meter record."""
        if self.meters is None:
            return False
        have = {(r.study_id, r.task_id) for r in self.meters.records}
        return all(len({k for k in have if k[0] == s.id}) == len(s.tasks)
                   for s in self.studies)

    def to_json(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "hub_url": self.hub_url,
            "studies": [
                {"id": s.id, "analysis": s.analysis, "status": s.status.value,
                 "nodes": {t.node: t.status.value for t in s.tasks}, "result": s.result}
                for s in self.studies
            ],
            "audit": self.audit,
            "checks": {
                "pooled_sql_count": self.pooled_count,
                "federated_total": self.studies[0].result.get("total") if self.studies[0].result
                else None,
            },
            "meter": self.meters.model_dump(mode="json") if self.meters else None,
            "settlement": self.settlement(),
            "kpi": self.kpi,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _people(fed: LocalFederation, sites: list[str]) -> dict[str, str]:
    """Orgs, a consumer, one data steward per data holder and an auditor (in the operator's
    organisation); returns their tokens."""
    fed.ensure_org(CONSUMER_ORG, "consumer")
    tokens: dict[str, str] = {}
    with fed.operator() as op:
        users = {u.name for u in op.list_users()}
        wanted = [(CONSUMER_USER, CONSUMER_ORG, "consumer")]
        wanted += [(f"steward_{site}", site, "data_holder_admin") for site in sites]
        wanted += [(AUDITOR_USER, OPERATOR_ORG, "auditor")]
        for name, org, role in wanted:
            if name not in users:
                op.add_user(name, org, role)
            tokens[name] = op.issue_token(name, "demo").token
    return tokens


def _approve(fed: LocalFederation, tokens: dict[str, str], study_id: int,
             say: Callable[[str], None]) -> None:
    """Each hospital's steward approves what its policy requires (two steps for L3)."""
    with fed.operator() as op:
        pending = [a for a in op.approvals("pending") if a["study_id"] == study_id]
    for item in pending:
        node = item["node"]
        with HubClient(fed.url, tokens[f"steward_{node}"]) as steward:
            for step in item["missing_steps"]:
                ref = IRB_REFERENCE if step == "ethics" else None
                steward.approve(study_id, node, step=step, ethics_ref=ref,
                                comment="approved for the demo feasibility study")
                say(f"{node}: {step} approval" + (f" ({ref})" if ref else ""))


def _audit(fed: LocalFederation, sites: list[str]) -> dict[str, Any]:
    """Verify the hub's and every node's ledger and cross-check the executions."""
    hub_db = fed.db_url
    hub = verify_hub(hub_db)
    report: dict[str, Any] = {"hub": {"ok": hub.ok, "entries": hub.entries}, "nodes": {}}
    for site in sites:
        state = state_path(fed.workdir / "nodes" / f"{site}.duckdb")
        node, held = verify_node(state, hub_db, site)
        _, found = crosscheck_files(hub_db, state, site)
        report["nodes"][site] = {"ok": node.ok, "entries": node.entries,
                                 "hub_checkpoints": held, "discrepancies": len(found)}
    report["ok"] = hub.ok and all(
        n["ok"] and not n["discrepancies"] for n in report["nodes"].values())
    return report


def _billing(fed: LocalFederation, tokens: dict[str, str], view: StudyView) -> dict[str, Any]:
    """The study's meter records, the month's platform statement and invoice, and the KPIs."""
    period = view.created_at.strftime("%Y-%m")
    with fed.operator() as op:
        found = {"meters": op.meter(study_id=view.id), "platform": op.statement(period),
                 "kpi": op.kpi(period)}
    with HubClient(fed.url, tokens[CONSUMER_USER]) as consumer:
        found["invoice"] = consumer.statement(period)
        found["account"] = consumer.account(CONSUMER_ORG)
    return found


def run_demo(
    *,
    persons: int = 20_000,
    workdir: Path | None = None,
    serve: bool = False,
    seed: int = 42,
    say: Callable[[str], None] = lambda msg: None,
    progress: Callable[[str, int, int], None] | None = None,
    keep: Callable[[LocalFederation, DemoResult], None] | None = None,
) -> DemoResult:
    """Run the demo end to end; ``keep`` is called while the federation is still up."""
    from healthspace.cdm.synth import generate

    started = time.perf_counter()
    timings: dict[str, float] = {}
    temp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="healthspace-demo-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"

    def lap(name: str, since: float) -> float:
        timings[name] = time.perf_counter() - since
        return time.perf_counter()

    try:
        t = time.perf_counter()
        if data.exists():
            shutil.rmtree(data)
        say(f"generating 3 hospitals and the payer bureau ({persons:,} persons per site)")
        generate(data, sites=3, persons=persons, seed=seed, payer=True, progress=progress)
        sites = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("_"))
        hospitals = [s for s in sites if s != "payer"]
        t = lap("synth", t)
        # The hub's graceful stop waits for in-flight long-polls; a 5 s poll keeps that within
        # the 10 s LocalFederation gives each process, so the hub exits cleanly (ledger flushed).
        with LocalFederation(root, poll_wait=5.0) as fed:
            fed.init_hub()
            fed.start_hub()
            say(f"hub up at {fed.url}")
            t = lap("hub_start", t)
            consent_files = []
            for site in sites:
                store = fed.workdir / "nodes" / f"{site}.duckdb"
                report = ingest_dir(store, data / site, progress=progress)
                state = NodeState.init(state_path(store), name=site)
                if report.identity_file:
                    state.load_identity(Path(report.identity_file))
                if site in hospitals:
                    consent_file = fed.workdir / "nodes" / f"{site}.consent.csv"
                    counts = write_consent(data / site, consent_file)
                    node_consent.import_csv(state, consent_file)
                    consent_files.append(consent_file)
                    say(f"{site}: consent loaded ({counts['withheld']:,} withheld, "
                        f"{counts['research_only']:,} research only)")
                fed.ensure_org(site, "payer" if site == "payer" else "hospital")
                fed.add_node(site, site, store, policy=POLICIES[site])
            t = lap("ingest", t)
            fed.wait_nodes_ready()
            t = lap("nodes_start", t)
            say(f"{len(sites)} nodes polling, each with its own policy: "
                + ", ".join(f"{s} {POLICIES[s]['level']}" for s in sites))
            tokens = _people(fed, sites)
            with fed.operator() as op:
                op.set_account(CONSUMER_ORG, deposit=CONSUMER_DEPOSIT,
                               credit_limit=CONSUMER_CREDIT)
            say(f"{CONSUMER_ORG}: prepaid quota CNY {CONSUMER_DEPOSIT:,.0f}, credit limit "
                f"CNY {CONSUMER_CREDIT:,.0f}")
            with HubClient(fed.url, tokens[CONSUMER_USER]) as consumer:
                spec = {"title": "T2D trial feasibility", "analysis": "cohort_count",
                        "purpose": PURPOSE, "cohort": showcase_cohort()}
                checks = consumer.check(spec)
                say("pre-check: " + ", ".join(f"{n} {d.outcome.value}" for n, d in checks.items()))
                view = consumer.submit(spec)
                say(f"study {view.id} submitted to {', '.join(view.nodes)}: {view.status.value}")
                _approve(fed, tokens, view.id, say)
                view = consumer.wait(view.id, timeout=120)
                consumer.feedback(view.id, 5, "fast and clear")
            t = lap("study", t)
            billing = _billing(fed, tokens, view)
            t = lap("billing", t)
            pooled = pooled_showcase_count([data / h for h in hospitals], consent_files)
            audit = _audit(fed, sites)
            lap("audit", t)
            timings["total"] = time.perf_counter() - started
            result = DemoResult(
                workdir=root, hub_url=fed.url, studies=[view], pooled_count=pooled,
                timings=timings, tokens={"operator": fed.operator_token, **tokens}, audit=audit,
                **billing,
            )
            if keep is not None:
                keep(fed, result)
            return result
    finally:
        if temp and not serve:
            shutil.rmtree(root, ignore_errors=True)
