"""One live federation per test session: a real uvicorn hub and node processes on loopback.

Every end-to-end test uses this fixture; they share one xdist group so a single federation
serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from healthspace.cdm.ingest import ingest_dir, ingest_table
from healthspace.client.sdk import HubClient
from healthspace.launch import LocalFederation

HOSPITALS = ["hospital_1", "hospital_2", "hospital_3"]
ROSSI_NODES = ["rossi_a", "rossi_b", "rossi_c"]
STRICT_POLICY = {
    "level": "L3",
    "allowed_purposes": ["research", "drug_development"],
    "min_cell_size": 11,
}
DP_POLICY = {"level": "L2", "approval_mode": "auto", "allowed_purposes": ["research"],
             "dp_budget": {"epsilon_per_consumer": 2.0, "period": "none"}}
# Foundation tests exercise counting, not approvals: every purpose, no approval step.
OPEN_POLICY = {
    "level": "L2",
    "approval_mode": "auto",
    "allowed_purposes": ["research", "public_health", "drug_development", "payer_policy",
                         "clinical_care"],
}
# The bureau's settlement site also answers commercial insurers' claim checks.
PAYER_POLICY = {**OPEN_POLICY, "allowed_purposes": [*OPEN_POLICY["allowed_purposes"],
                                                    "commercial_insurance"]}


def rossi_parts(workdir: Path) -> dict[str, Path]:
    """lifelines' rossi recidivism data split into three CSV files, one per registry node."""
    from lifelines.datasets import load_rossi

    df = load_rossi()
    bounds = [(0, 150), (150, 300), (300, len(df))]
    paths = {}
    for name, (lo, hi) in zip(ROSSI_NODES, bounds, strict=True):
        paths[name] = workdir / f"{name}.csv"
        df.iloc[lo:hi].to_csv(paths[name], index=False)
    return paths


def add_rossi_registry(fed: LocalFederation, workdir: Path) -> dict[str, Path]:
    """Registry nodes holding a plain research table (rossi in 3 parts) under the
    ``registry`` data centre, on the open policy; returns each node's CSV part."""
    fed.ensure_org("registry", "data_centre")
    parts = rossi_parts(workdir)
    for name, part in parts.items():
        store = workdir / "nodes" / f"{name}.duckdb"
        ingest_table(store, part)
        fed.add_node(name, "registry", store, policy=OPEN_POLICY)
    return parts


@dataclass
class Live:
    fed: LocalFederation
    consumer_token: str
    data: Path
    eunomia: list[Path]
    steward_token: str = ""
    auditor_token: str = ""

    @property
    def url(self) -> str:
        return self.fed.url

    def consumer(self) -> HubClient:
        return HubClient(self.fed.url, self.consumer_token)


@pytest.fixture(scope="session")
def live(tmp_path_factory, synth_dir, eunomia_sites) -> Live:
    workdir = tmp_path_factory.mktemp("federation")
    fed = LocalFederation(workdir, poll_wait=10.0)
    fed.init_hub()
    fed.start_hub()
    try:
        sites = [("hospital_1", "hospital"), ("hospital_2", "hospital"),
                 ("hospital_3", "hospital"), ("payer", "payer")]
        for name, kind in sites:
            store = workdir / "nodes" / f"{name}.duckdb"
            ingest_dir(store, synth_dir / name)
            fed.ensure_org(name, kind)
            fed.add_node(name, name, store,
                         policy=PAYER_POLICY if kind == "payer" else OPEN_POLICY,
                         identity=synth_dir / name / "identity.csv")
        # A sensitive (L3) dataset: two-level approval, its own admin, for governance tests.
        strict = workdir / "nodes" / "strict_site.duckdb"
        ingest_dir(strict, synth_dir / "hospital_3")
        fed.ensure_org("strict_lab", "data_centre")
        fed.add_node("strict_site", "strict_lab", strict, policy=STRICT_POLICY)
        # A dataset open to differentially private counts only within a per-consumer ε budget.
        dp_store = workdir / "nodes" / "dp_site.duckdb"
        ingest_dir(dp_store, synth_dir / "hospital_2")
        fed.add_node("dp_site", "strict_lab", dp_store, policy=DP_POLICY)
        fed.ensure_org("gibleed_centre", "data_centre")
        for site in eunomia_sites:
            store = workdir / "nodes" / f"{site.name}.duckdb"
            ingest_dir(store, site)
            fed.add_node(site.name, "gibleed_centre", store, policy=OPEN_POLICY)
        add_rossi_registry(fed, workdir)
        fed.wait_nodes_ready()
        fed.ensure_org("pharma", "consumer")
        with fed.operator() as op:
            op.add_user("analyst", "pharma", "consumer")
            token = op.issue_token("analyst").token
            op.add_user("steward", "strict_lab", "data_holder_admin")
            steward = op.issue_token("steward").token
            op.add_user("auditor", "operator", "auditor")
            auditor = op.issue_token("auditor").token
        yield Live(fed=fed, consumer_token=token, data=synth_dir, eunomia=eunomia_sites,
                   steward_token=steward, auditor_token=auditor)
    finally:
        fed.close()
