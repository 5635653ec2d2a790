"""The main job: synthetic hospitals + payer, a real hub and nodes on loopback, a study.

Also computes the same cohort with hand-written DuckDB SQL over the pooled CSV files, so the
demo shows that the federated total equals the pooled answer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import state_path
from healthspace.core.models import StudyView
from healthspace.launch import LocalFederation
from healthspace.node.state import NodeState

CONSUMER_ORG = "pharma_demo"
CONSUMER_USER = "analyst"


def showcase_cohort() -> dict[str, Any]:
    text = resources.files("healthspace.examples").joinpath("t2d_feasibility.json").read_text()
    return dict(json.loads(text))


# Independent of the cohort compiler: the showcase cohort written by hand over pooled CSVs.
POOLED_SQL = """
WITH
concept AS {concept},
person AS {person},
cond AS {condition},
meas AS {measurement},
drug AS {drug},
t2d AS (SELECT concept_id FROM concept WHERE vocabulary_id = 'ICD10' AND concept_code LIKE 'E11%'),
hba1c AS (SELECT concept_id FROM concept WHERE vocabulary_id = 'LOINC' AND concept_code = '4548-4'),
met AS (SELECT concept_id FROM concept WHERE vocabulary_id = 'ATC' AND concept_code = 'A10BA02'),
idx AS (
  SELECT site, person_id, min(condition_start_date) AS d FROM cond
  WHERE condition_concept_id IN (SELECT concept_id FROM t2d)
     OR condition_source_concept_id IN (SELECT concept_id FROM t2d)
  GROUP BY site, person_id)
SELECT count(*) FROM idx JOIN person p USING (site, person_id)
WHERE year(idx.d) - p.year_of_birth BETWEEN 40 AND 75
  AND EXISTS (SELECT 1 FROM meas m WHERE m.site = idx.site AND m.person_id = idx.person_id
      AND (m.measurement_concept_id IN (SELECT concept_id FROM hba1c)
           OR m.measurement_source_concept_id IN (SELECT concept_id FROM hba1c))
      AND m.value_as_number > 7.0
      AND m.measurement_date BETWEEN idx.d - INTERVAL 365 DAY AND idx.d)
  AND EXISTS (SELECT 1 FROM drug x WHERE x.site = idx.site AND x.person_id = idx.person_id
      AND (x.drug_concept_id IN (SELECT concept_id FROM met)
           OR x.drug_source_concept_id IN (SELECT concept_id FROM met))
      AND x.drug_exposure_start_date BETWEEN idx.d - INTERVAL 365 DAY AND idx.d)
"""


def pooled_showcase_count(site_dirs: list[Path]) -> int:
    """Count the showcase cohort over the union of all sites' CSV files with plain SQL."""

    def source(table: str) -> str:
        paths = ", ".join(f"'{(d / f'{table}.csv').as_posix()}'" for d in site_dirs)
        # `filename` tags each row with its file; the site is that file's folder.
        return (f"(SELECT *, parse_dirpath(filename) AS site FROM read_csv_auto([{paths}], "
                "filename = true, union_by_name = true))")

    sql = POOLED_SQL.format(
        concept=source("concept"), person=source("person"),
        condition=source("condition_occurrence"), measurement=source("measurement"),
        drug=source("drug_exposure"),
    )
    con = duckdb.connect()
    try:
        return int(con.execute(sql).fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


@dataclass
class DemoResult:
    workdir: Path
    hub_url: str
    studies: list[StudyView]
    pooled_count: int
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "hub_url": self.hub_url,
            "studies": [
                {"id": s.id, "analysis": s.analysis, "status": s.status.value,
                 "nodes": {t.node: t.status.value for t in s.tasks}, "result": s.result}
                for s in self.studies
            ],
            "checks": {
                "pooled_sql_count": self.pooled_count,
                "federated_total": self.studies[0].result.get("total") if self.studies[0].result
                else None,
            },
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


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
    try:
        t = time.perf_counter()
        if data.exists():
            shutil.rmtree(data)
        say(f"generating 3 hospitals and the payer bureau ({persons:,} persons per site)")
        generate(data, sites=3, persons=persons, seed=seed, payer=True, progress=progress)
        timings["synth"] = time.perf_counter() - t
        sites = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("_"))
        with LocalFederation(root) as fed:
            t = time.perf_counter()
            fed.init_hub()
            fed.start_hub()
            timings["hub_start"] = time.perf_counter() - t
            say(f"hub up at {fed.url}")
            t = time.perf_counter()
            for site in sites:
                store = fed.workdir / "nodes" / f"{site}.duckdb"
                report = ingest_dir(store, data / site, progress=progress)
                state = NodeState.init(state_path(store))
                if report.identity_file:
                    state.load_identity(Path(report.identity_file))
                kind = "payer" if site == "payer" else "hospital"
                fed.ensure_org(site, kind)
                fed.add_node(site, site, store)
            timings["ingest"] = time.perf_counter() - t
            t = time.perf_counter()
            fed.wait_nodes_ready()
            timings["nodes_start"] = time.perf_counter() - t
            say(f"{len(sites)} nodes polling: {', '.join(sites)}")
            fed.ensure_org(CONSUMER_ORG, "consumer")
            with fed.operator() as op:
                if CONSUMER_USER not in {u.name for u in op.list_users()}:
                    op.add_user(CONSUMER_USER, CONSUMER_ORG, "consumer")
                consumer_token = op.issue_token(CONSUMER_USER, "demo").token
            from healthspace.client.sdk import HubClient

            t = time.perf_counter()
            with HubClient(fed.url, consumer_token) as consumer:
                view = consumer.submit({
                    "title": "T2D trial feasibility",
                    "analysis": "cohort_count",
                    "purpose": "drug_development",
                    "cohort": showcase_cohort(),
                })
                say(f"study {view.id} submitted to {', '.join(view.nodes)}")
                view = consumer.wait(view.id, timeout=120)
            timings["study"] = time.perf_counter() - t
            hospitals = [data / s for s in sites if s != "payer"]
            pooled = pooled_showcase_count(hospitals)
            timings["total"] = time.perf_counter() - started
            result = DemoResult(
                workdir=root, hub_url=fed.url, studies=[view], pooled_count=pooled,
                timings=timings,
                tokens={"operator": fed.operator_token, CONSUMER_USER: consumer_token},
            )
            if keep is not None:
                keep(fed, result)
            return result
    finally:
        if temp and not serve:
            shutil.rmtree(root, ignore_errors=True)
