"""``healthspace sim drug-value`` and ``healthspace payer value-report``: drug value reports."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.common import JsonOpt, split_list
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.payer import app
from healthspace.cli.sim import (
    CohortOpt,
    DatasetOpt,
    MinCellOpt,
    PurposeOpt,
    SecureOpt,
    SitesOpt,
    TableOpt,
    run_sim,
)
from healthspace.cli.sim import app as sim_app
from healthspace.core.errors import InvalidInput

ReportOpt = Annotated[Path | None, typer.Option(
    "--report", help="Also write the markdown report and its PNG plots into this folder.")]


def example(name: str) -> Path:
    """A bundled example file (the drug value cohort and dataset are the defaults)."""
    return Path(str(resources.files("healthspace.examples").joinpath(name)))


def _fmt(item: dict[str, Any] | None, digits: int = 2, key: str = "estimate") -> str:
    if not item:
        return "–"
    lo, hi = item["ci"] if item.get("ci") else (None, None)
    text = f"{item[key]:,.{digits}f}"
    return text if lo is None else f"{text} ({lo:,.{digits}f} to {hi:,.{digits}f})"


def value_table(result: dict[str, Any]) -> Table:
    cur = result["currency"]
    view = Table(title=f"drug value: {result['treatment']} vs {result['comparator']}, "
                       f"{result['nobs']:,} persons")
    for column in ("arm", "persons", "events", "person-years", "events/100 PY",
                   f"{cur} / PY"):
        view.add_column(column, justify="left" if column == "arm" else "right")
    for name, arm in result["arms"].items():
        view.add_row(f"{name} ({arm['role']})", f"{arm['persons']:,}", str(arm["events"]),
                     f"{arm['person_years']:,.1f}", _fmt(arm["events_per_100py"]),
                     _fmt(arm["cost_per_py"], 0))
    return view


def show(result: dict[str, Any]) -> None:
    out.print(value_table(result))
    comparison = result["comparison"]
    out.print(f"Δ cost per patient-year: {_fmt(comparison['delta_cost_per_py'], 0)} "
              f"{result['currency']}")
    if result.get("withheld"):
        out.print(f"outcomes withheld: {result['withheld']}")
        return
    out.print(f"events avoided per 100 PY: {_fmt(comparison['events_avoided_per_100py'])}")
    hazard = _fmt(result["cox"], 3, "hazard_ratio")
    out.print(f"log-rank p = {result['logrank']['p']:.4g}; Cox HR = {hazard}")
    icer = comparison["icer"]
    value = "not given" if icer["estimate"] is None else _fmt(icer, 0)
    out.print(f"ICER: {value} {icer['unit']} — {icer['quadrant']}: {icer['interpretation']}")
    if icer.get("note"):
        out.print(f"  {icer['note']}", highlight=False)


def _report(result: dict[str, Any], folder: Path, quiet: bool) -> None:
    from healthspace.payer.value_report import write_report

    files = write_report(result, folder)
    if not quiet:
        err.print(f"report written to {files.markdown} ({len(files.plots)} plot(s))")


@sim_app.command("drug-value")
def drug_value(
    site: SitesOpt = None,
    table: TableOpt = None,
    cohort: CohortOpt = None,
    dataset: DatasetOpt = None,
    arm: Annotated[str, typer.Option(help="The arm (exposure) column.")] = "drug",
    treatment: Annotated[str, typer.Option(help="The treatment's arm value.")] = "gliclazide",
    comparator: Annotated[str, typer.Option(help="The comparator's arm value.")] = "metformin",
    duration: Annotated[str, typer.Option(help="Follow-up column (days).")] = "time",
    event: Annotated[str, typer.Option(help="Event column (1 event, 0 censored).")] = "event",
    cost: Annotated[str, typer.Option(help="Cost column (currency units).")] = "cost",
    covariates: Annotated[str, typer.Option(
        help="Comma-separated columns adjusting the Cox model: x1,x2.")] = "",
    horizon_days: Annotated[float | None, typer.Option(
        "--horizon-days", help="Read the survival curves at this day.")] = None,
    alpha: Annotated[float, typer.Option(help="1 − confidence level.")] = 0.05,
    report: ReportOpt = None,
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Drug value for price negotiation over OMOP sites (default cohort and dataset: the
    bundled gliclazide vs metformin example) or per-site tables: outcomes, cost per
    patient-year and the ICER."""
    if report is not None and not report.parent.exists():
        raise InvalidInput(f"folder {report.parent} does not exist", field="report")
    if site and not table:
        cohort = cohort or example("gliclazide_hf_cohort.yaml")
        dataset = dataset or example("drug_value_dataset.yaml")
    params = {"arm": arm, "treatment": treatment, "comparator": comparator,
              "duration": duration, "event": event, "cost": cost,
              "covariates": split_list(covariates), "horizon_days": horizon_days,
              "alpha": alpha}
    result = run_sim("drug_value", params, table=table, site=site, cohort=cohort,
                     dataset=dataset, min_cell_size=min_cell_size, purpose=purpose,
                     quiet=json_out, secure=secure)
    if report is not None:
        _report(result, report, json_out)
    if json_out:
        emit_json(result)
        return
    show(result)


@app.command("value-report")
def value_report(
    result_file: Annotated[Path, typer.Option(
        "--result", help="A drug_value result: the JSON of `healthspace study results ID "
                         "--json` or of `healthspace sim drug-value --json`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the report and plots.")],
) -> None:
    """Render a drug value result as a markdown report with PNG plots."""
    if not result_file.is_file():
        raise InvalidInput(f"result file {result_file} does not exist", field="result")
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{result_file} is not JSON: {exc}", field="result") from None
    _report(result, out_dir, quiet=False)
