"""``healthspace payer group`` (on a node's store), ``sim casemix`` and ``sim drg-weights``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.common import JsonOpt, StoreOpt
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.sim import MinCellOpt, SecureOpt, SitesOpt, run_sim
from healthspace.cli.sim import app as sim_app
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Payer analytics: DRG/DIP grouping of inpatient cases.",
                  no_args_is_help=True)
RulesOpt = Annotated[Path | None, typer.Option(
    help="Grouping rule file (YAML/JSON, docs/payer.md); default: the shipped sample.")]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def casemix_table(result: dict[str, Any]) -> Table:
    rules = result["rules"]
    label = "" if rules["official"] else " — SAMPLE rules, not an official table"
    view = Table(title=f"case mix, {rules['name']} {rules['version']}{label}: "
                       f"{result['cases']} cases")
    for column in ("DRG", "MDC", "title", "cases", "mean LOS", "mean charge", "weight"):
        view.add_column(column, justify="left" if column in ("DRG", "MDC", "title")
                        else "right")
    for g in result["groups"]:
        if g.get("suppressed"):
            view.add_row(g["drg"], g["mdc"] or "–", g["title"], f"<{result['min_cell_size']}",
                         "suppressed", "suppressed", "–")
        else:
            view.add_row(g["drg"], g["mdc"] or "–", g["title"], str(g["cases"]),
                         _fmt(g["mean_los"], 1), _fmt(g["mean_charge"]),
                         _fmt(g["relative_weight"], 3))
    return view


def _simulate(analysis: str, params: dict[str, Any], rules: Path | None,
              site: list[str] | None, min_cell_size: int, secure: bool, json_out: bool,
              table: Any) -> None:
    """Run a payer analysis over ``--site`` folders and print its JSON or its table."""
    from healthspace.client.studyfile import read_document

    spec = read_document(rules, "rules") if rules is not None else None
    result = run_sim(analysis, {"rules": spec, **params}, table=None, site=site,
                     min_cell_size=min_cell_size, quiet=json_out, secure=secure)
    if json_out:
        emit_json(result)
        return
    out.print(table(result))


@app.command("group")
def group_store(
    store: StoreOpt,
    rules: RulesOpt = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Write every case with its MDC, DRG and DIP group (stays local).")]
    = None,
    json_out: JsonOpt = False,
) -> None:
    """Group this node's inpatient cases (DRG and DIP) on its own store."""
    from healthspace.analyses.execute import run_alone
    from healthspace.analyses.secure import clear_partial
    from healthspace.cdm.store import open_store
    from healthspace.client.studyfile import read_document
    from healthspace.payer.cases import grouped_cases
    from healthspace.payer.rules import load_rules

    spec = read_document(rules, "rules") if rules is not None else None
    grouping = load_rules(spec)
    if out_file is not None and not out_file.parent.exists():
        raise InvalidInput(f"folder {out_file.parent} does not exist", field="out")
    con = open_store(store, read_only=True)
    try:
        frame = grouped_cases(con, grouping)
        # The node's own data, exact: its small cells are suppressed in the table only.
        result = run_alone(con, site=store.stem, analysis="casemix", params={"rules": spec},
                           masker=clear_partial)
    finally:
        con.close()
    if out_file is not None:
        frame.assign(secondary=frame["secondary"].map(" ".join),
                     procedures=frame["procedures"].map(" ".join)).to_csv(out_file, index=False)
        err.print(f"{len(frame)} cases written to {out_file}")
    if json_out:
        emit_json(result)
        return
    out.print(casemix_table(result))


@sim_app.command("casemix")
def casemix(
    site: SitesOpt = None,
    rules: RulesOpt = None,
    min_cell_size: MinCellOpt = 10,
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """DRG case mix across OMOP sites: cases, mean LOS, mean charge, relative weights."""
    _simulate("casemix", {}, rules, site, min_cell_size, secure, json_out, casemix_table)


def weights_table(result: dict[str, Any]) -> Table:
    rules = result["rules"]
    label = "" if rules["official"] else " — SAMPLE rules, not an official table"
    view = Table(title=f"DRG weights, {rules['name']} {rules['version']}{label}; trim "
                       f"{result['trim']}; overall mean charge "
                       f"{_fmt(result['overall_mean_charge'])}")
    for column in ("DRG", "title", "cases", "kept", "mean charge", "median", "CV",
                   "mean LOS", "median LOS", "weight"):
        view.add_column(column, justify="left" if column in ("DRG", "title") else "right")
    for g in result["groups"]:
        if g.get("suppressed"):
            view.add_row(g["drg"], g["title"], f"<{result['min_cell_size']}", *["–"] * 7)
        else:
            view.add_row(g["drg"], g["title"], str(g["cases"]), str(g["trimmed_cases"]),
                         _fmt(g["mean_charge"]), _fmt(g["median_charge"]),
                         _fmt(g["cv_charge"], 3), _fmt(g["mean_los"], 1),
                         _fmt(g["median_los"], 0), _fmt(g["relative_weight"], 3))
    return view


@sim_app.command("drg-weights")
def drg_weights(
    site: SitesOpt = None,
    rules: RulesOpt = None,
    trim: Annotated[str, typer.Option(help="iqr, 3sd or none.")] = "iqr",
    iqr_factor: Annotated[float, typer.Option(help="IQR trimming factor.")] = 1.5,
    min_cell_size: MinCellOpt = 10,
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Federated DRG weights: trimmed mean, median and CV of charge and stay per DRG."""
    _simulate("drg_weights", {"trim": trim, "iqr_factor": iqr_factor}, rules, site,
              min_cell_size, secure, json_out, weights_table)


@app.command("screen")
def screen_store(
    store: StoreOpt,
    rules: RulesOpt = None,
    readmit_days: Annotated[int, typer.Option(help="Split admission window (days).")] = 15,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Write the flagged claims (stays on this node).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Screen this node's settlement claims for split admissions, duplicate billing, LOS
    outliers and upcoding (the payer site's own view)."""
    from healthspace.cdm.store import open_store
    from healthspace.client.studyfile import read_document
    from healthspace.payer.cases import grouped_cases
    from healthspace.payer.rules import load_rules
    from healthspace.payer.screening import FLAGS, flag_claims, upcoding

    spec = read_document(rules, "rules") if rules is not None else None
    if out_file is not None and not out_file.parent.exists():
        raise InvalidInput(f"folder {out_file.parent} does not exist", field="out")
    con = open_store(store, read_only=True)
    try:
        cases = grouped_cases(con, load_rules(spec))
    finally:
        con.close()
    flagged = flag_claims(cases, readmit_days)
    any_flag = flagged[list(FLAGS)].any(axis=1)
    if out_file is not None:
        flagged[any_flag].assign(secondary=flagged["secondary"].map(" ".join),
                                 procedures=flagged["procedures"].map(" ".join)).to_csv(
            out_file, index=False)
        err.print(f"{int(any_flag.sum())} flagged claims written to {out_file}")
    counts = flagged.groupby("hospital")[list(FLAGS)].sum().astype(int)
    ranked = upcoding(cases)
    if json_out:
        emit_json({"claims": len(flagged), "flagged": int(any_flag.sum()),
                   "hospitals": {h: row.to_dict() for h, row in counts.iterrows()},
                   "upcoding": ranked})
        return
    view = Table("hospital", *FLAGS, title=f"{len(flagged)} claims screened")
    for hospital, row in counts.iterrows():
        view.add_row(str(hospital), *(str(int(row[f])) for f in FLAGS))
    out.print(view)
    ranking = Table("rank", "hospital", "CC/MCC observed", "expected", "ratio", "95% CI",
                    title="upcoding signal (standardised CC/MCC ratio)")
    for r in ranked:
        ci = "–" if r["ci"] is None else f"{r['ci'][0]:.2f}–{r['ci'][1]:.2f}"
        ranking.add_row(str(r["rank"]), r["hospital"], str(r["observed"]),
                        _fmt(r["expected"], 1), _fmt(r["ratio"], 2), ci)
    out.print(ranking)
from healthspace.cli import payer_value as _payer_value  # noqa: E402,F401
