"""The payer scenario: a medical-insurance bureau and its hospitals, with fraud injected.

Synthetic hospitals and the bureau's settlement site are generated with fraud injected into
the bureau's copy of one hospital's claims (split admissions, duplicate bills, severity codes
without clinical evidence), plus a commercial insurer's claims file. A real hub and nodes run
on loopback; the bureau's analyst runs the case mix and the federated DRG weights (secure
aggregation; each hospital's own position delivered to it and the bureau only), the fraud
screen on the payer node and the evidence check with the hospitals; the insurer checks its
claims against the settled records by PSI. The findings the payer node kept are scored
against the injected truth, and the insurer's outcomes against its truth file.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import state_path
from healthspace.client.sdk import HubClient
from healthspace.core.models import StudyView
from healthspace.launch import LocalFederation
from healthspace.node.state import NodeState

BUREAU_ORG, BUREAU_USER = "payer", "bureau_analyst"
INSURER_ORG, INSURER_USER = "insurer_demo", "claims_desk"
FRAUD_HOSPITAL = "hospital_3"
INSURER_CLAIMS = 3000
CLAIM_WINDOW_DAYS = 90  # the insurer checks its claims of the last quarter
POLICY = {"level": "L2", "approval_mode": "auto",
          "allowed_purposes": ["payer_policy", "public_health", "research"]}
PAYER_POLICY = {**POLICY, "allowed_purposes": [*POLICY["allowed_purposes"],
                                               "commercial_insurance"]}


@dataclass
class PayerDemoResult:
    workdir: Path
    hub_url: str
    studies: dict[str, StudyView]
    detection: dict[str, Any]
    claims: dict[str, Any]
    delivered_to_hospital: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.status.value == "completed" for v in self.studies.values()) and \
            self.claims.get("agree", False)

    def to_json(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir), "hub_url": self.hub_url,
            "studies": {name: {"id": v.id, "status": v.status.value, "result": v.result,
                               "delivered": v.delivered} for name, v in self.studies.items()},
            "detection": self.detection, "claims": self.claims,
            "delivered_to_hospital": self.delivered_to_hospital,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _tokens(fed: LocalFederation, hospitals: list[str]) -> dict[str, str]:
    fed.ensure_org(INSURER_ORG, "consumer")
    wanted = [(BUREAU_USER, BUREAU_ORG, "consumer"), (INSURER_USER, INSURER_ORG, "consumer")]
    wanted += [(f"steward_{h}", h, "data_holder_admin") for h in hospitals]
    tokens = {}
    with fed.operator() as op:
        users = {u.name for u in op.list_users()}
        for name, org, role in wanted:
            if name not in users:
                op.add_user(name, org, role)
            tokens[name] = op.issue_token(name, "payer demo").token
    return tokens


def _recent_claims(data: Path) -> tuple[Path, dict[str, str], tuple[date, date]]:
    """The insurer's claims of the last ``CLAIM_WINDOW_DAYS`` days, and their truth."""
    with open(data / "insurer" / "claims.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(data / "_truth" / "insurer_claims.csv", newline="", encoding="utf-8") as handle:
        truth = {r["claim_id"]: r["expected"] for r in csv.DictReader(handle)}
    last = max(date.fromisoformat(r["date"]) for r in rows)
    first = last - timedelta(days=CLAIM_WINDOW_DAYS)
    recent = [r for r in rows if date.fromisoformat(r["date"]) >= first]
    path = data / "insurer" / "recent_claims.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(recent)
    return path, {r["claim_id"]: truth[r["claim_id"]] for r in recent}, (first, last)


def run_payer_demo(
    *,
    persons: int = 10_000,
    workdir: Path | None = None,
    seed: int = 42,
    say: Callable[[str], None] = lambda msg: None,
    progress: Callable[[str, int, int], None] | None = None,
) -> PayerDemoResult:
    """Run the payer scenario end to end on this machine."""
    from healthspace.cdm.synth import generate
    from healthspace.cdm.synth_fraud import FraudSpec
    from healthspace.payer.claims import ClaimChecker, read_claims
    from healthspace.payer.fraud_truth import score

    started = time.perf_counter()
    timings: dict[str, float] = {}
    temp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="healthspace-payer-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"

    def lap(name: str, since: float) -> float:
        timings[name] = time.perf_counter() - since
        return time.perf_counter()

    try:
        t = time.perf_counter()
        if data.exists():
            shutil.rmtree(data)
        say(f"generating 3 hospitals and the bureau ({persons:,} persons per hospital), fraud "
            f"injected into the bureau's copy of {FRAUD_HOSPITAL}'s claims, an insurer's claims")
        generate(data, sites=3, persons=persons, seed=seed, payer=True,
                 fraud=FraudSpec(hospitals=(FRAUD_HOSPITAL,)), insurer_claims=INSURER_CLAIMS,
                 progress=progress)
        hospitals = ["hospital_1", "hospital_2", "hospital_3"]
        t = lap("synth", t)
        with LocalFederation(root) as fed:
            fed.init_hub()
            fed.start_hub()
            say(f"hub up at {fed.url}")
            for site in [*hospitals, "payer"]:
                store = fed.workdir / "nodes" / f"{site}.duckdb"
                ingest_dir(store, data / site, progress=progress)
                fed.ensure_org(site, "payer" if site == "payer" else "hospital")
                fed.add_node(site, site, store,
                             policy=PAYER_POLICY if site == "payer" else POLICY,
                             identity=data / site / "identity.csv")
            fed.wait_nodes_ready()
            t = lap("nodes", t)
            tokens = _tokens(fed, hospitals)
            studies: dict[str, StudyView] = {}
            with HubClient(fed.url, tokens[BUREAU_USER]) as bureau:
                plan: list[tuple[str, dict[str, Any]]] = [
                    ("casemix", {"analysis": "casemix", "nodes": hospitals,
                                 "secure_aggregation": True}),
                    ("drg_weights", {"analysis": "drg_weights", "nodes": hospitals,
                                     "secure_aggregation": True}),
                    ("fraud_screen", {"analysis": "fraud_screen", "nodes": ["payer"]}),
                    ("evidence_check", {"analysis": "evidence_check",
                                        "nodes": ["payer", *hospitals],
                                        "params": {"payer": "payer"}}),
                ]
                for name, spec in plan:
                    view = bureau.submit({**spec, "purpose": "payer_policy",
                                          "title": f"payer demo: {name}"})
                    view = bureau.wait(view.id, timeout=600)
                    studies[name] = view
                    say(f"study {view.id} {name} on {', '.join(view.nodes)}: "
                        f"{view.status.value}")
                    t = lap(name, t)
            with HubClient(fed.url, tokens["steward_hospital_1"]) as steward:
                own = steward.study(studies["drg_weights"].id).delivered or {}
            path, truth, period = _recent_claims(data)
            checker = ClaimChecker(read_claims(path))
            try:
                with HubClient(fed.url, tokens[INSURER_USER]) as insurer:
                    view = insurer.submit({"analysis": "claim_check", "nodes": ["payer"],
                                           "purpose": "commercial_insurance",
                                           "title": f"claim check: {len(truth)} claims",
                                           "params": checker.params(period)})
                    view = insurer.wait(view.id, timeout=600)
                studies["claim_check"] = view
                outcomes = checker.outcomes(view.result) if view.result else []
            finally:
                checker.close()
            say(f"study {view.id} claim_check ({len(truth)} claims): {view.status.value}")
            t = lap("claim_check", t)
            state = NodeState.open(state_path(fed.workdir / "nodes" / "payer.duckdb"))
            screen = studies["fraud_screen"]
            ranking = [r["hospital"] for r in (screen.result or {}).get("upcoding", [])]
            detection = score(data / "_truth",
                              state.findings(screen.id, "fraud_screen"),
                              state.findings(studies["evidence_check"].id, "evidence_check"),
                              ranking)
            got = {r["claim_id"]: r["outcome"] for r in outcomes}
            counts: dict[str, dict[str, int]] = {}
            for claim_id, expected in truth.items():
                row = counts.setdefault(expected, {})
                row[got.get(claim_id, "missing")] = row.get(got.get(claim_id, "missing"), 0) + 1
            claims = {"checked": len(outcomes), "period": [period[0].isoformat(),
                                                           period[1].isoformat()],
                      "agree": got == truth, "by_expected": counts}
            timings["total"] = time.perf_counter() - started
            return PayerDemoResult(workdir=root, hub_url=fed.url, studies=studies,
                                   detection=detection, claims=claims,
                                   delivered_to_hospital=own, timings=timings)
    finally:
        if temp:
            shutil.rmtree(root, ignore_errors=True)
