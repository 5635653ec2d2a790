"""Tables for people: statements, meter records and the KPI report."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.table import Table

from healthspace.core.metering import MeterList, Statement, StatementLine

TITLES = {"invoice": "invoice", "earnings": "earnings statement", "platform": "platform summary"}


def _money(value: float, currency: str = "") -> str:
    return f"{currency + ' ' if currency else ''}{value:,.2f}"


def statement_table(st: Statement) -> Table:
    """Narrow enough for an 80-column terminal: the full lines are in the JSON and CSV."""
    party = "holder" if st.kind == "invoice" else "consumer"
    table = Table(title=f"{st.org} — {TITLES[st.kind]} {st.period} ({st.currency})")
    table.add_column("study", justify="right")
    if st.kind == "platform":
        table.add_column("consumer")
    table.add_column("holder" if st.kind != "earnings" else party)
    for column in ("persons", "points", "charge", "fee", "earned"):
        table.add_column(column, justify="right")
    for ln in st.lines:
        who = [ln.consumer_org, ln.holder] if st.kind == "platform" else \
            [ln.holder if st.kind == "invoice" else ln.consumer_org]
        persons = f"≤{ln.persons:,}" if ln.persons_band else f"{ln.persons:,}"
        table.add_row(str(ln.study_id), *who, persons, f"{ln.points:.1f}",
                      _money(ln.charge), _money(ln.platform_fee), _money(ln.earned))
    t = st.totals
    table.add_section()
    blanks = [""] * (2 if st.kind == "platform" else 1)
    table.add_row("total", *blanks, f"{t['persons']:,}", f"{t['points']:.1f}",
                  _money(t["invoiced"]), _money(t["platform_fee"]), _money(t["earned"]),
                  style="bold")
    return table


def balance_line(st: Statement) -> str:
    t = st.totals
    mark = "[green]balanced[/]" if t["balanced"] else "[bold red]NOT BALANCED[/]"
    return (f"invoiced {_money(t['invoiced'], st.currency)} = earned "
            f"{_money(t['earned'], st.currency)} + platform fee "
            f"{_money(t['platform_fee'], st.currency)} ({st.fee_rate:.0%}): {mark}")


def statement_csv(st: Statement) -> str:
    columns = list(StatementLine.model_fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for ln in st.lines:
        writer.writerow(ln.model_dump(mode="json"))
    return buffer.getvalue()


def meter_table(meters: MeterList) -> Table:
    """Fits 80 columns; consumer, analysis and bytes are in the JSON (``--json``)."""
    table = Table(title=f"meter records ({int(meters.totals.get('records', 0))})")
    table.add_column("study", justify="right")
    table.add_column("rnd", justify="right")
    table.add_column("node", no_wrap=True)
    table.add_column("status")
    for column in ("rows read", "persons", "seconds", "ε"):
        table.add_column(column, justify="right")
    for r in meters.records:
        m = r.meter
        persons = f"≤{m.persons:,}" if m.persons_band else f"{m.persons:,}"
        table.add_row(str(r.study_id), str(r.round), r.node, str(m.status),
                      f"{m.records_scanned:,}", persons, f"{m.seconds:.3f}", f"{m.epsilon:g}")
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:.2g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "—"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def kpi_table(report: dict[str, Any]) -> Table:
    """One table, a row per KPI, grouped by family."""
    cost, eff, value, safety = (report[k] for k in ("cost", "efficiency", "value", "safety"))
    c = report["currency"]
    rows: list[tuple[str, str, Any]] = [
        ("cost", f"total cost ({c})", cost["total_cost"]),
        ("cost", "records used", cost["records_used"]),
        ("cost", f"unit sharing cost ({c} / 1,000 records)", cost["unit_cost_per_1000_records"]),
        ("cost", f"cost per contributing person ({c})", cost["cost_per_person"]),
        ("cost", f"trend vs {cost['previous']['period']} (unit cost, %)",
         cost["trend_pct"]["unit_cost_per_1000_records"]),
        ("efficiency", "studies submitted", eff["studies"]),
        ("efficiency", "approval turnaround p50 / p95 (h)",
         f"{_fmt(eff['approval_turnaround_hours']['p50'])} / "
         f"{_fmt(eff['approval_turnaround_hours']['p95'])}"),
        ("efficiency", "time to result p50 / p95 (min)",
         f"{_fmt(eff['time_to_result_minutes']['p50'])} / "
         f"{_fmt(eff['time_to_result_minutes']['p95'])}"),
        ("efficiency", "success rate",
         f"{eff['success_rate']:.1%}" if eff["success_rate"] is not None else "—"),
        ("value", "studies completed (by purpose)", value["completed_by_purpose"]),
        ("value", "models deployed", value["models_deployed"]),
        ("value", "consumers served", value["consumers_served"]),
        ("value", "data holders credited", value["data_holders_credited"]),
        ("safety", "denials by reason", safety["denials_by_reason"]),
        ("safety", "node refusals", safety["node_refusals"]),
        ("safety", "ε spent", safety["dp_epsilon_spent"]),
        ("safety", "ledger", "verified" if safety["ledger"]["ok"] else "FAILED "
         f"({safety['ledger'].get('problem')})"),
        ("safety", "incidents", safety["incidents"]),
    ]
    table = Table("family", "indicator", "value", title=f"KPIs {report['period']}")
    last = None
    for family, name, val in rows:
        table.add_row(family if family != last else "", name,
                      val if isinstance(val, str) else _fmt(val))
        last = family
    return table
