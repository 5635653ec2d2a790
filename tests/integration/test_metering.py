"""Metering and settlement over real processes: what the nodes used, priced, balanced."""

from __future__ import annotations

import json
import sqlite3
from decimal import ROUND_HALF_UP, Decimal

import duckdb
import pytest

from healthspace.core.canonical import canonical_json
from healthspace.core.enums import StudyStatus
from healthspace.demo_data import showcase_cohort

from .conftest import HOSPITALS, OPEN_POLICY
from .helpers import cli
from .reference import t2d_feasibility

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]

# The tables the showcase cohort reads (its entry, inclusion criteria and the codes' concepts).
SHOWCASE_TABLES = ("person", "condition_occurrence", "measurement", "drug_exposure", "concept")


def csv_rows(site, table: str) -> int:
    path = (site / f"{table}.csv").as_posix()
    return int(duckdb.connect().execute(
        f"SELECT count(*) FROM read_csv('{path}', all_varchar = true)").fetchone()[0])


def cents(x: Decimal) -> int:
    return int((x / Decimal("0.01")).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.fixture(scope="module")
def metered(live):
    with live.consumer() as c:
        view = c.wait(c.submit({"analysis": "cohort_count", "cohort": showcase_cohort(),
                                "purpose": "drug_development", "title": "metered",
                                "nodes": HOSPITALS}).id, timeout=120)
    assert view.status == StudyStatus.COMPLETED, view.error
    with live.fed.operator() as op:
        meters = op.meter(study_id=view.id)
    return view, meters


def test_meters_equal_what_each_node_used(live, metered):
    view, meters = metered
    assert sorted(r.node for r in meters.records) == HOSPITALS  # one record per task
    db = sqlite3.connect(f"file:{live.fed.workdir / 'hub.sqlite'}?mode=ro", uri=True)
    for record in meters.records:
        site, m = live.data / record.node, record.meter
        assert m.status == "completed" and m.analysis == "cohort_count" and not m.preview
        # Records scanned: the full row counts of the tables the cohort reads, from the CSVs.
        assert m.records_scanned == sum(csv_rows(site, t) for t in SHOWCASE_TABLES)
        # Persons: the site's cohort by hand-written SQL (released, as it is >= k here).
        assert m.persons == t2d_feasibility(site) == view.result["sites"][record.node]
        assert m.persons_band is None and m.epsilon == 0 and 0 < m.seconds < 60
        # Bytes: the payload the hub stored in the signed envelope, byte for byte.
        (body,) = db.execute("SELECT e.body FROM envelopes e JOIN tasks t "
                             "ON t.envelope_id = e.id WHERE t.id = ?",
                             (record.task_id,)).fetchone()
        envelope = json.loads(body)
        assert m.bytes == len(canonical_json(envelope["payload"]))
        assert envelope["meter"]["records_scanned"] == m.records_scanned  # signed with it
    db.close()
    assert meters.totals["persons"] == view.result["total"]


def test_statement_balances_and_the_cli_writes_csv_and_json(live, metered, tmp_path):
    view, meters = metered
    period = view.created_at.strftime("%Y-%m")
    with live.fed.operator() as op:
        platform = op.statement(period)
    lines = [ln for ln in platform.lines if ln.study_id == view.id]
    assert sorted(ln.holder for ln in lines) == HOSPITALS
    # The live nodes' policies are free: zero charges, but points split by persons.
    persons = {r.node: r.meter.persons for r in meters.records}
    for ln in lines:
        assert ln.charge == ln.platform_fee == ln.earned == 0
        assert ln.points == pytest.approx(100 * persons[ln.node] / sum(persons.values()),
                                          abs=1e-4)
    assert platform.totals["balanced"] is True
    out = tmp_path / "statements"
    proc = cli(live, "billing", "statement", "--period", period, "--out", str(out), "--json")
    invoice = json.loads(proc.stdout)
    assert invoice["kind"] == "invoice" and invoice["org"] == "pharma"
    assert any(ln["study_id"] == view.id for ln in invoice["lines"])
    written = json.loads((out / f"pharma-{period}-invoice.json").read_text())
    assert written["totals"] == invoice["totals"]
    csv_lines = (out / f"pharma-{period}-invoice.csv").read_text().splitlines()
    assert csv_lines[0].startswith("study_id,title,settled_at")
    assert len(csv_lines) == 1 + len(invoice["lines"])


def test_priced_study_is_invoiced_and_quota_refuses_the_next(live, tmp_path):
    """hospital_3 prices its data; the consumer's account then refuses what it cannot pay."""
    node = live.fed.nodes["hospital_3"]
    prices = {"per_study": 120, "per_person": 0.35, "per_compute_second": 3,
              "purpose_rates": {"research": 0.5}}
    priced = tmp_path / "priced.json"
    priced.write_text(json.dumps({**OPEN_POLICY, "prices": prices}))
    restore = tmp_path / "restore.json"
    restore.write_text(json.dumps(OPEN_POLICY))
    cli(live, "node", "policy", "set", str(priced), "--store", str(node.store))
    try:
        _wait_prices(live, "hospital_3", prices)
        with live.consumer() as c:
            view = c.wait(c.submit({"analysis": "cohort_count", "cohort": showcase_cohort(),
                                    "purpose": "research", "nodes": ["hospital_3"]}).id,
                          timeout=120)
        assert view.status == StudyStatus.COMPLETED
        with live.fed.operator() as op:
            (record,) = op.meter(study_id=view.id).records
            invoice = op.statement(view.created_at.strftime("%Y-%m"), org="pharma")
        (line,) = [ln for ln in invoice.lines if ln.study_id == view.id]
        m = record.meter
        half = Decimal("0.5")
        expected = (cents(Decimal("120") * half) + cents(Decimal("0.35") * m.persons * half)
                    + cents(Decimal("3") * Decimal(repr(round(m.seconds, 6))) * half))
        assert cents(Decimal(str(line.charge))) == expected
        fee = cents(Decimal(expected) * Decimal("0.01") * Decimal("0.1"))  # 10 %, half up
        assert cents(Decimal(str(line.platform_fee))) == fee
        assert cents(Decimal(str(line.earned))) == expected - fee
        # The consumer sees the study's cost: settled, under the estimate reserved for it
        # (every person in the catalogue, compute billed on top).
        with live.consumer() as c:
            cost = c.study(view.id).cost
        assert cost is not None and cost.invoiced == line.charge and cost.currency == "CNY"
        catalog = 60 + 0.175 * next(n for n in c_nodes(live) if n.name == "hospital_3"
                                    ).catalog.tables["person"]
        assert cost.estimate == pytest.approx(catalog, abs=0.01)
        # An account with less than the next study's estimate left: refused before it runs.
        with live.fed.operator() as op:
            account = op.set_account("pharma", deposit=1.0, credit_limit=0)
        assert account.available < 60  # the next one costs at least per_study × rate = 60
        proc = cli(live, "study", "submit", "--wait", str(_study_file(tmp_path)), check=False)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "quota" in proc.stderr and "left" in proc.stderr
    finally:
        with live.fed.operator() as op:
            op.set_account("pharma", credit_limit=1e9)  # unlimited again for other tests
        cli(live, "node", "policy", "set", str(restore), "--store", str(node.store))
        _wait_prices(live, "hospital_3", None)


def c_nodes(live):
    with live.consumer() as c:
        return c.list_nodes()


def _study_file(tmp_path):
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"analysis": "cohort_count", "cohort": showcase_cohort(),
                                "purpose": "research", "nodes": ["hospital_3"]}))
    return path


def _wait_prices(live, node: str, prices, timeout: float = 60) -> None:
    """Until the node's agent has republished its policy and the hub shows these prices."""
    import time

    deadline = time.monotonic() + timeout
    with live.consumer() as c:
        while time.monotonic() < deadline:
            if next(n for n in c.list_nodes() if n.name == node).prices == prices:
                return
            time.sleep(0.25)
    raise AssertionError(f"{node} did not publish prices {prices} within {timeout}s")


def test_the_reporting_commands_by_role(live, metered):
    view, meters = metered
    period = view.created_at.strftime("%Y-%m")
    mine = json.loads(cli(live, "meter", "list", "--study", str(view.id), "--json").stdout)
    assert [r["task_id"] for r in mine["records"]] == [r.task_id for r in meters.records]
    table = cli(live, "meter", "list", "--study", str(view.id)).stdout
    assert "rows read" in table and "hospital_1" in table and "records scanned" in table
    kpi = json.loads(cli(live, "kpi", "--period", period, "--json",
                         token=live.auditor_token).stdout)
    assert kpi["period"] == period and kpi["safety"]["ledger"]["ok"] is True
    assert kpi["value"]["studies_completed"] >= 1
    assert "unit sharing cost" in cli(live, "kpi", "--period", period,
                                      token=live.auditor_token).stdout
    denied = cli(live, "kpi", "--period", period, check=False)  # a consumer
    assert denied.returncode == 3
    bad = cli(live, "billing", "statement", "--period", "2026-13", check=False)
    assert bad.returncode == 2 and "period" in bad.stderr
    assert json.loads(cli(live, "sla", "breaches", "--json",
                          token=live.auditor_token).stdout) == []  # the live nodes set none
    listing = cli(live, "node", "list").stdout  # consumers compare sites by quality and price
    assert "quality" in listing and "per study" in listing and "hospital_1" in listing
    account = json.loads(cli(live, "billing", "account", "show", "pharma", "--json").stdout)
    assert account["org"] == "pharma" and account["currency"] == "CNY"
