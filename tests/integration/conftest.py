"""One live federation per test session: a real uvicorn hub and node processes on loopback.

Every end-to-end test uses this fixture; they share one xdist group so a single federation
serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from healthspace.cdm.ingest import ingest_dir
from healthspace.client.sdk import HubClient
from healthspace.launch import LocalFederation

HOSPITALS = ["hospital_1", "hospital_2", "hospital_3"]


@dataclass
class Live:
    fed: LocalFederation
    consumer_token: str
    data: Path
    eunomia: list[Path]

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
            fed.add_node(name, name, store)
        fed.ensure_org("gibleed_centre", "data_centre")
        for site in eunomia_sites:
            store = workdir / "nodes" / f"{site.name}.duckdb"
            ingest_dir(store, site)
            fed.add_node(site.name, "gibleed_centre", store)
        fed.wait_nodes_ready()
        fed.ensure_org("pharma", "consumer")
        with fed.operator() as op:
            op.add_user("analyst", "pharma", "consumer")
            token = op.issue_token("analyst").token
        yield Live(fed=fed, consumer_token=token, data=synth_dir, eunomia=eunomia_sites)
    finally:
        fed.close()
