"""``healthspace billing|meter|kpi|sla``: statements, accounts, meter records, KPIs, breaches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from healthspace.cli.billing_render import (
    balance_line,
    kpi_table,
    meter_table,
    statement_csv,
    statement_table,
)
from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client
from healthspace.cli.output import emit_json, err, out
from healthspace.core.clock import utcnow
from healthspace.core.enums import ExitCode
from healthspace.core.errors import InvalidInput
from healthspace.core.metering import AccountView

app = typer.Typer(help="Invoices, earnings statements and consumers' prepaid accounts.",
                  no_args_is_help=True)
account_app = typer.Typer(help="A consumer organisation's prepaid quota and credit limit.",
                          no_args_is_help=True)
app.add_typer(account_app, name="account")
meter_app = typer.Typer(help="Meter records: what every task used, measured on the node.",
                        no_args_is_help=True)
sla_app = typer.Typer(help="Service-level breaches.", no_args_is_help=True)

PeriodOpt = Annotated[str | None, typer.Option(
    help="A month, YYYY-MM (UTC); default: the current month.")]
FORMATS = ("table", "json", "csv")


def _period(value: str | None) -> str:
    now = utcnow()
    return value or f"{now.year:04d}-{now.month:02d}"


@app.command("statement")
def statement(
    period: PeriodOpt = None,
    org: Annotated[str | None, typer.Option(help="Organisation (default: yours).")] = None,
    kind: Annotated[str | None, typer.Option(
        help="invoice|earnings|platform (default: by the organisation's kind).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table|json|csv on stdout.")] = "table",
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Also write ORG-PERIOD-KIND.csv and .json into this folder.")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """A month's invoice (consumer), earnings statement (data holder) or platform summary."""
    fmt = "json" if json_out else fmt
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}",
                           field="format")
    with client(hub, token) as c:
        st = c.statement(_period(period), org, kind)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"{st.org}-{st.period}-{st.kind}"
        Path(f"{stem}.csv").write_text(statement_csv(st), encoding="utf-8")
        Path(f"{stem}.json").write_text(json.dumps(st.model_dump(mode="json"), indent=2),
                                        encoding="utf-8")
        err.print(f"wrote {stem}.csv and {stem}.json", highlight=False)
    if fmt == "json":
        emit_json(st.model_dump(mode="json"))
    elif fmt == "csv":
        out.print(statement_csv(st), end="", highlight=False, markup=False)
    else:
        out.print(statement_table(st))
        out.print(balance_line(st), highlight=False)
    if not st.totals["balanced"]:
        raise typer.Exit(int(ExitCode.ERROR))


def _show_account(view: AccountView, json_out: bool) -> None:
    if json_out:
        emit_json(view.model_dump(mode="json"))
        return
    table = Table(title=f"account of {view.org} ({view.currency})", show_header=False)
    for label in ("prepaid", "credit_limit", "invoiced", "reserved", "available"):
        table.add_row(label.replace("_", " "), f"{getattr(view, label):,.2f}")
    out.print(table)


@account_app.command("show")
def account_show(org: str, hub: HubOpt = None, token: TokenOpt = None,
                 json_out: JsonOpt = False) -> None:
    """Prepaid, credit limit, invoiced, reserved (studies not yet settled) and available."""
    with client(hub, token) as c:
        _show_account(c.account(org), json_out)


@account_app.command("set")
def account_set(
    org: str,
    deposit: Annotated[float | None, typer.Option(help="Add this to the prepaid balance.")] = None,
    credit_limit: Annotated[float | None, typer.Option(
        help="How far past the prepaid balance the organisation may go.")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Operator: top up a consumer's quota or set its credit limit (limits every submission)."""
    if deposit is None and credit_limit is None:
        raise InvalidInput("give --deposit, --credit-limit or both", field="deposit")
    with client(hub, token) as c:
        _show_account(c.set_account(org, deposit=deposit, credit_limit=credit_limit), json_out)


@meter_app.command("list")
def meter_list(
    study: Annotated[int | None, typer.Option(help="Only this study.")] = None,
    node: Annotated[str | None, typer.Option(help="Only this node.")] = None,
    period: Annotated[str | None, typer.Option(help="Only this month, YYYY-MM.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 100,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Meter records you may see, with totals over every match."""
    with client(hub, token) as c:
        meters = c.meter(study_id=study, node=node, period=period, limit=limit)
    if json_out:
        emit_json(meters.model_dump(mode="json"))
        return
    out.print(meter_table(meters))
    totals = meters.totals
    out.print(f"totals: {int(totals['records_scanned']):,} records scanned, "
              f"{int(totals['persons']):,} persons, {totals['seconds']:.2f} s, "
              f"{int(totals['bytes']):,} bytes, ε {totals['epsilon']:g}", highlight=False)


def kpi(period: PeriodOpt = None, hub: HubOpt = None, token: TokenOpt = None,
        json_out: JsonOpt = False) -> None:
    """Cost, efficiency, value and safety KPIs of one month (operator, auditor)."""
    with client(hub, token) as c:
        report = c.kpi(_period(period))
    if json_out:
        emit_json(report)
        return
    out.print(kpi_table(report))


@sla_app.command("breaches")
def sla_breaches(period: Annotated[str | None, typer.Option(
                     help="Only breaches detected in this month, YYYY-MM.")] = None,
                 hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Missed approval and result targets (found now and before)."""
    with client(hub, token) as c:
        rows = c.sla_breaches(period)
    if json_out:
        emit_json(rows)
        return
    table = Table("study", "node", "kind", "target", "actual", "state", "detected",
                  title=f"SLA breaches ({len(rows)})")
    for r in rows:
        scale, unit = (3600, "h") if r["kind"] == "approval" else (60, "min")
        table.add_row(str(r["study_id"]), r["node"], r["kind"],
                      f"{r['target_seconds'] / scale:g} {unit}",
                      f"{r['actual_seconds'] / scale:.1f} {unit}",
                      "open" if r["open"] else "closed", str(r["detected_at"]))
    out.print(table)
