"""``healthspace sim summary`` and ``sim pv``: descriptive statistics and disproportionality."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.common import JsonOpt, split_list
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.sim import (
    CohortOpt,
    DatasetOpt,
    MinCellOpt,
    PurposeOpt,
    SitesOpt,
    TableOpt,
    app,
    run_sim,
)
from healthspace.core.errors import InvalidInput


def parse_crosstabs(values: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for value in values or []:
        a, sep, b = value.partition(":")
        if not sep or not a.strip() or not b.strip():
            raise InvalidInput(f"expected ROW:COLUMN, got {value!r}", field="crosstab")
        pairs.append((a.strip(), b.strip()))
    return pairs


def parse_quantiles(text: str) -> list[float]:
    try:
        return [float(q) for q in split_list(text)]
    except ValueError:
        raise InvalidInput(f"expected numbers like 0.25,0.5,0.75, got {text!r}",
                           field="quantiles") from None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _band(band: list[float] | None, left: str, right: str) -> str:
    return "–" if band is None else f"{left}{_fmt(band[0])}, {_fmt(band[1])}{right}"


def _ratio(value: float | None, ci: list[float] | None) -> str:
    return "–" if value is None or ci is None else f"{value:.2f} ({ci[0]:.2f}–{ci[1]:.2f})"


def _numeric_table(title: str, numeric: dict[str, Any]) -> Table:
    view = Table(title=title)
    for column in ("variable", "n", "missing", "mean", "SD", "min in", "max in",
                   "quantiles (value ± bound)"):
        view.add_column(column, justify="left" if column == "variable" else "right")
    for name, s in numeric.items():
        qs = "  ".join(f"q{q['q']:g}: {q['value']:.4g} ± {q['error_bound']:.2g}"
                       for q in s["quantiles"])
        withheld = f" (withheld: {', '.join(s['withheld_sites'])})" if s["withheld_sites"] else ""
        view.add_row(name + withheld, str(s["n"]), str(s["missing"] if s["n"] else "–"),
                     _fmt(s["mean"]), _fmt(s["sd"]), _band(s["min_band"], "[", ")"),
                     _band(s["max_band"], "(", "]"), qs)
    return view


def _levels_table(title: str, rows: list[dict[str, Any]], key: str = "level") -> Table:
    view = Table(title=title)
    for column in (key, "count", "%"):
        view.add_column(column, justify="left" if column == key else "right")
    for row in rows:
        pct = "–" if row["percent"] is None else f"{row['percent']:.1f}"
        view.add_row(str(row[key]), row["display"], pct)
    return view


def _crosstab_table(title: str, tab: dict[str, Any]) -> Table:
    cols = [c["level"] for c in tab["col_totals"]]
    view = Table(title=title)
    view.add_column(f"{tab['rows']} \\ {tab['cols']}")
    for col in [*cols, "total"]:
        view.add_column(col, justify="right")
    cells = {(c["row"], c["col"]): c["display"] for c in tab["cells"]}
    for total in tab["row_totals"]:
        row = total["level"]
        view.add_row(row, *[cells[(row, col)] for col in cols], total["display"])
    return view


@app.command("summary")
def summary(
    variables: Annotated[str, typer.Option("--variables", help="Columns to summarise, comma "
                                           "separated (numeric: moments, bands, quantiles; "
                                           "others: frequency tables).")] = "",
    categorical: Annotated[str, typer.Option("--categorical", help="Columns to treat as "
                                             "categorical even if numeric.")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Stratify every statistic by this "
                                           "column.")] = None,
    crosstab: Annotated[list[str] | None, typer.Option("--crosstab", help="ROW:COLUMN, a "
                                                       "two-way table (repeatable).")] = None,
    quantiles: Annotated[str, typer.Option("--quantiles", help="Quantiles in (0, 1), comma "
                                           "separated.")] = "0.25,0.5,0.75",
    table: TableOpt = None,
    site: SitesOpt = None,
    cohort: CohortOpt = None,
    dataset: DatasetOpt = None,
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    json_out: JsonOpt = False,
) -> None:
    """Descriptive statistics and cross-tabs, every released cell disclosure-controlled."""
    params = {"variables": split_list(variables), "categorical": split_list(categorical),
              "by": by, "crosstabs": parse_crosstabs(crosstab),
              "quantiles": parse_quantiles(quantiles)}
    result = run_sim("summary", params, table=table, site=site, cohort=cohort, dataset=dataset,
                     min_cell_size=min_cell_size, purpose=purpose, quiet=json_out)
    if json_out:
        emit_json(result)
        return
    for name, stratum in result["strata"].items():
        where = "" if by is None else f", {by}={name}"
        out.print(f"n = {stratum['n']['display']}{where}")
        if stratum["withheld_sites"]:
            err.print(f"withheld by {', '.join(stratum['withheld_sites'])} (fewer than k rows)")
        if stratum["numeric"]:
            out.print(_numeric_table(f"numeric variables{where}", stratum["numeric"]))
        for var, rows in stratum["categorical"].items():
            out.print(_levels_table(f"{var}{where}", rows))
        for tab in stratum["crosstabs"]:
            out.print(_crosstab_table(f"{tab['rows']} × {tab['cols']}{where}", tab))
    out.print("≥n: lower bound (a site suppressed the cell); quantile ± bound: the exact pooled "
              "value lies within the bound; min/max: bands holding ≥ k values.")


@app.command("pv")
def pv(
    source: Annotated[str, typer.Option("--source", help="cdm (OMOP folders, --site) or table "
                                        "(long report×drug×event CSVs, --table).")] = "cdm",
    window_days: Annotated[int | None, typer.Option("--window-days", help="cdm: length of "
                                                    "the person-time cells, the exposure "
                                                    "window after a dispensing (default 30).")]
    = None,
    drug_level: Annotated[int | None, typer.Option("--drug-level", help="cdm: ATC characters "
                                                   "kept (default 7).")] = None,
    event_level: Annotated[int | None, typer.Option("--event-level", help="cdm: ICD-10 "
                                                    "characters kept (default 3).")] = None,
    drugs: Annotated[str | None, typer.Option("--drugs", help="Drug code prefixes, comma "
                                              "separated.")] = None,
    events: Annotated[str | None, typer.Option("--events", help="Event code prefixes, comma "
                                               "separated.")] = None,
    report: Annotated[str | None, typer.Option("--report", help="table: report id column "
                                               "(default report_id).")] = None,
    drug: Annotated[str | None, typer.Option("--drug", help="table: drug column "
                                             "(default drug).")] = None,
    event: Annotated[str | None, typer.Option("--event", help="table: event column "
                                              "(default event).")] = None,
    table: TableOpt = None,
    site: SitesOpt = None,
    cohort: CohortOpt = None,
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    json_out: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="Pairs shown in the table view.")] = 20,
) -> None:
    """Disproportionality (PRR, ROR, Yates χ², Evans signals) per drug–event pair."""
    given = {"window_days": window_days, "drug_level": drug_level, "event_level": event_level,
             "report": report, "drug": drug, "event": event,
             "drugs": split_list(drugs) if drugs is not None else None,
             "events": split_list(events) if events is not None else None}
    params: dict[str, Any] = {"source": source,
                              **{k: v for k, v in given.items() if v is not None}}
    result = run_sim("pv", params, table=table, site=site, cohort=cohort,
                     min_cell_size=min_cell_size, purpose=purpose, quiet=json_out)
    if json_out:
        emit_json(result)
        return
    view = Table(title=f"disproportionality, N={result['N']} reports, "
                       f"signals: {len(result['signals'])} (Evans: PRR≥2, χ²≥4, a≥3)")
    view.add_column("drug→event", no_wrap=True)
    for column in ("a", "c", "PRR (95% CI)", "ROR (95% CI)", "χ²", "signal"):
        view.add_column(column, justify="right")
    for p in result["pairs"][:limit]:
        a = f"≥{p['a']}" if p["a_is_lower_bound"] else str(p["a"])
        view.add_row(f"{p['drug']}→{p['event']}", a, str(p["c"]),
                     _ratio(p["prr"], p["prr_ci"]), _ratio(p["ror"], p["ror_ci"]),
                     _fmt(p["chi2"]), "yes" if p["signal"] else "")
    out.print(view)
    out.print("a: reports with the drug and the event, c: with the event but not the drug "
              "(b, d and the per-site counts: --json)")
    if len(result["pairs"]) > limit:
        out.print(f"… {len(result['pairs']) - limit} more pairs (--limit, or --json)")
    for name, why in result.get("refused", {}).items():
        err.print(f"{name} refused: {why}", highlight=False)


@app.command("link")
def link(
    receiver: Annotated[str, typer.Option("--receiver", help="The site that learns the result "
                                                             "(and, with membership, who).")],
    site: SitesOpt = None,
    cohort: CohortOpt = None,
    mode: Annotated[str, typer.Option(help="size, or membership (the receiver keeps which of "
                                           "its persons are shared).")] = "size",
    group: Annotated[str, typer.Option(help="ed25519 (default) or x25519 (faster, leaks one "
                                            "bit per id).")] = "ed25519",
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    json_out: JsonOpt = False,
) -> None:
    """Patients two sites share (private set intersection over their identity vaults)."""
    params = {"receiver": receiver, "mode": mode, "group": group}
    result = run_sim("psi_link", params, table=None, site=site, cohort=cohort,
                     min_cell_size=min_cell_size, purpose=purpose, quiet=json_out)
    if json_out:
        emit_json(result)
        return
    view = Table(title=f"record linkage ({result['group']} DH-PSI, {result['mode']})")
    view.add_column("")
    view.add_column("persons", justify="right")
    for name, count in result["sites"].items():
        view.add_row(f"{name} (linkable)", f"{count:,}" if isinstance(count, int) else count)
    shared = result["intersection"]
    view.add_row("[bold]shared[/]", f"[bold]{shared:,}[/]" if isinstance(shared, int)
                 else str(shared))
    out.print(view)
