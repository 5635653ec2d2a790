"""Benchmark: what metering costs on the node, and settlement and reports at the hub.

Node: the showcase feasibility count on one synthetic hospital, run through ``run_local``
(every statement parsed for the tables it reads, their rows counted) against the same
analysis on the bare DuckDB connection. Target: metered / bare ≤ 1.05.

Hub: ``--studies`` finished studies of 3 priced nodes each (meter records in a SQLite hub
database, as the node posts them) are settled one by one, then the month's platform
statement and KPI report are built over all of them; the statement must balance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from healthspace.analyses import registry
from healthspace.analyses.base import LocalContext
from healthspace.analyses.execute import run_local
from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.store import open_store
from healthspace.cdm.synth import generate
from healthspace.cohort.models import load_cohort
from healthspace.core.clock import FixedClock
from healthspace.demo_data import showcase_cohort

console = Console(stderr=True)


def node_bench(root: Path, persons: int, repeats: int) -> dict[str, float]:
    data = root / "data"
    if not (data / "hospital_1" / "person.csv").exists():
        generate(data, sites=1, persons=persons, seed=3)
    store = root / "h1.duckdb"
    if not store.exists():
        ingest_dir(store, data / "hospital_1")
    con = open_store(store, read_only=True)
    cohort = showcase_cohort()
    impl = registry.get("cohort_count")
    params = impl.parse_params({})
    bare, metered, scanned = [], [], 0
    for i in range(repeats + 1):  # the first of each is a warm-up
        t = time.perf_counter()
        ctx = LocalContext(con=con, site="h1", cohort=load_cohort(cohort))
        impl.local(ctx, params, None)
        if i:
            bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        run = run_local(con, site="h1", analysis="cohort_count", params={}, cohort=cohort)
        if i:
            metered.append(time.perf_counter() - t)
        scanned = run.records_scanned
    con.close()
    b, m = statistics.median(bare), statistics.median(metered)
    return {"bare_s": b, "metered_s": m, "ratio": m / b, "records_scanned": scanned}


def hub_bench(root: Path, studies: int) -> dict[str, float]:
    from sqlalchemy.orm import Session

    from healthspace.core.enums import OrgKind, PrincipalKind, Role
    from healthspace.hub.bootstrap import init_hub
    from healthspace.hub.db.models import (
        MeterRecord,
        Node,
        Organisation,
        Study,
        StudyNode,
        Task,
        User,
    )
    from healthspace.hub.db.session import make_engine
    from healthspace.hub.principal import Principal
    from healthspace.hub.services import billing, kpi, statements
    from healthspace.hub.settings import HubSettings

    start = datetime(2026, 3, 2, tzinfo=UTC)
    url = f"sqlite:///{root / 'hub.sqlite'}"
    (root / "hub.sqlite").unlink(missing_ok=True)
    init_hub(url, clock=FixedClock(start))
    engine = make_engine(url)
    settings = HubSettings()
    prices = {"per_study": 100, "per_person": 0.3, "per_compute_second": 2,
              "purpose_rates": {"research": 0.5}}
    with Session(engine) as s:
        pharma = Organisation(name="pharma", kind="consumer", created_at=start)
        s.add(pharma)
        s.flush()
        user = User(name="analyst", org_id=pharma.id, role="consumer", created_at=start)
        s.add(user)
        nodes = []
        for i in range(3):
            org = Organisation(name=f"hosp{i}", kind="hospital", created_at=start)
            s.add(org)
            s.flush()
            node = Node(name=f"node{i}", org_id=org.id, enrolled_at=start,
                        catalog={"tables": {"person": 10_000}}, policy={"prices": prices})
            s.add(node)
            nodes.append(node)
        s.flush()
        for k in range(studies):
            at = start + timedelta(minutes=k)
            study = Study(analysis="cohort_count", params={}, purpose="research" if k % 2
                          else "drug_development", nodes=[n.name for n in nodes],
                          status="completed", round=1, state={}, submitted_by=user.id,
                          created_at=at, updated_at=at, finished_at=at)
            s.add(study)
            s.flush()
            for j, node in enumerate(nodes):
                s.add(StudyNode(study_id=study.id, node_id=node.id, decision="allow",
                                approval="not_required", prices=prices))
                task = Task(study_id=study.id, node_id=node.id, round=1, status="completed",
                            min_cell_size=10, queued_at=at, finished_at=at, attempts=1)
                s.add(task)
                s.flush()
                s.add(MeterRecord(study_id=study.id, task_id=task.id, node_id=node.id,
                                  round=1, analysis="cohort_count", purpose=study.purpose,
                                  preview=False, status="completed", records_scanned=500_000,
                                  persons=200 + 37 * j + k % 50, seconds=0.1 + 0.01 * j,
                                  bytes=900, epsilon=0.0, envelope_id=0, recorded_at=at))
        s.commit()
        rows = list(s.query(Study).order_by(Study.id))
        t = time.perf_counter()
        for study in rows:
            billing.settle(s, study.finished_at, settings, study)
        s.commit()
        settle_s = time.perf_counter() - t
        operator = Principal(kind=PrincipalKind.USER, id=0, name="op", org_id=0,
                             org="operator", org_kind=OrgKind.OPERATOR, role=Role.OPERATOR)
        t = time.perf_counter()
        st = statements.statement(s, settings, operator, "operator", "2026-03")
        statement_s = time.perf_counter() - t
        t = time.perf_counter()
        report = kpi.report(s, "2026-03", {"ok": True}, settings.currency)
        kpi_s = time.perf_counter() - t
    engine.dispose()
    assert st.totals["balanced"] and st.totals["lines"] == 3 * studies
    assert report["cost"]["total_cost"] == st.totals["invoiced"]
    return {"studies": studies, "settle_per_study_ms": 1000 * settle_s / studies,
            "statement_s": statement_s, "kpi_s": kpi_s, "lines": st.totals["lines"],
            "invoiced": st.totals["invoiced"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=100_000, help="persons at the node")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--studies", type=int, default=2_000, help="settled studies at the hub")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="also print a JSON summary last")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-metering-"))
    root.mkdir(parents=True, exist_ok=True)
    node = node_bench(root, args.persons, args.repeats)
    hub = hub_bench(root, args.studies)
    table = Table(title="metering")
    for column in ("measure", "value"):
        table.add_column(column)
    table.add_row(f"node: cohort_count bare ({args.persons:,} persons)", f"{node['bare_s']:.4f} s")
    table.add_row("node: cohort_count metered", f"{node['metered_s']:.4f} s")
    table.add_row("node: ratio metered / bare (target ≤ 1.05)", f"{node['ratio']:.3f}")
    table.add_row("node: records scanned", f"{node['records_scanned']:,}")
    table.add_row(f"hub: settle one study ({args.studies:,} studies × 3 nodes)",
                  f"{hub['settle_per_study_ms']:.2f} ms")
    table.add_row(f"hub: platform statement ({hub['lines']:,} lines)",
                  f"{hub['statement_s']:.3f} s")
    table.add_row("hub: KPI report", f"{hub['kpi_s']:.3f} s")
    Console().print(table)
    if args.json:
        print(json.dumps({"node": node, "hub": hub}))


if __name__ == "__main__":
    main()
