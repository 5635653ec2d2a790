"""``healthspace sim``: run catalogue analyses in-process over local folders (no HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from healthspace.cli.common import JsonOpt, check_min_cell
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.render import breakdown_table, count_table

app = typer.Typer(help="Simulate the federation in-process over local OMOP folders.",
                  no_args_is_help=True)

SiteOpt = Annotated[
    list[str], typer.Option("--site", help="NAME=DIR, an OMOP CSV folder, or NAME=STORE, a "
                                           "node store (.duckdb) (repeatable).")
]


@app.command("count")
def count(
    site: SiteOpt,
    cohort: Annotated[Path, typer.Option("--cohort", help="Cohort definition (JSON or YAML).")],
    min_cell_size: Annotated[int, typer.Option(help="Minimum cell size (≥ 5).")] = 10,
    breakdown: Annotated[bool, typer.Option(help="Include the age × sex breakdown.")] = True,
    purpose: Annotated[str, typer.Option(help="The study's purpose (policy and consent).")] = (
        "research"
    ),
    dp_epsilon: Annotated[float | None, typer.Option(
        "--dp-epsilon", help="Differentially private counts: ε spent per site (0 < ε ≤ 10). "
                             "No budget ledger in simulation.")] = None,
    obfuscate: Annotated[bool, typer.Option(
        "--obfuscate", help="SHRINE-style obfuscation (noise, bins of 5, '≤ 10'); not DP.")]
    = False,
    distinct: Annotated[bool, typer.Option(
        "--distinct", help="Also estimate distinct persons across sites (keyed-hash "
                           "HyperLogLog, ±2 standard errors); exact counts only.")] = False,
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Cohort counts per site and in total, with the nodes' disclosure rules."""
    from healthspace.analyses import registry
    from healthspace.client.studyfile import read_document
    from healthspace.cohort.models import load_cohort
    from healthspace.sim import parse_site_args, simulate_dirs

    check_min_cell(min_cell_size)
    params: dict[str, Any] = {"breakdown": breakdown}
    if dp_epsilon is not None:
        params["dp_epsilon"] = dp_epsilon
    if obfuscate:
        params["obfuscate"] = True
    if distinct:
        params["distinct"] = True
    registry.get("cohort_count").parse_params(params)  # fail fast, naming the field
    sites = parse_site_args(site)
    definition = read_document(cohort, "cohort")
    load_cohort(definition)  # fail fast, naming the field, before loading any data
    if not json_out:
        err.print(f"loading {len(sites)} site(s) and counting…")
    result = simulate_dirs(
        "cohort_count", sites, params=params, cohort=definition,
        min_cell_size=min_cell_size, purpose=purpose, secure=secure,
    )
    if json_out:
        emit_json(result)
        return
    if result.get("dp"):
        out.print(dp_count_table(result))
    else:
        title = "cohort counts (simulation, obfuscated: not DP)" if result.get("obfuscated") \
            else "cohort counts (simulation)"
        table = count_table(result, title=title)
        if "distinct_total" in result:
            bound = " (lower bound)" if result["distinct_total_is_lower_bound"] else ""
            table.add_row("distinct persons (HLL)", f"{result['distinct_total']:,} "
                          f"± {result['distinct_total_error']:,}{bound}")
        out.print(table)
    for name, why in result.get("refused", {}).items():
        err.print(f"{name} refused: {why}", highlight=False)
    for name, cells in result.get("breakdown", {}).items():
        out.print(breakdown_table(name, cells))
        if name in result.get("cell_intervals", {}):
            out.print(f"{name}: every cell ± {result['cell_intervals'][name]} (95% noise)")


def dp_count_table(result: dict[str, Any]) -> Any:
    """Noisy counts with their 95 % noise half-widths, and the ε spent."""
    from rich.table import Table

    eps = result["epsilon"]
    table = Table(title=f"cohort counts (simulation, ε-DP: ε={eps['study']:g} in all)")
    for column in ("site", "persons (noisy)", "95% noise", "ε"):
        table.add_column(column, justify="left" if column == "site" else "right")
    for name, value in result["sites"].items():
        table.add_row(name, f"{value:,}", f"± {result['intervals'][name]:,}",
                      f"{eps['sites'][name]:g}")
    table.add_row("[bold]total[/]", f"[bold]{result['total']:,}[/]",
                  f"± {result['total_interval']:,}", f"{eps['study']:g}")
    return table


TableOpt = Annotated[
    list[str] | None,
    typer.Option("--table", help="NAME=FILE.csv, one site's analysis table (repeatable)."),
]
SitesOpt = Annotated[
    list[str] | None,
    typer.Option("--site", help="NAME=DIR, an OMOP CSV folder, or NAME=STORE, a node store "
                                "(repeatable); with --cohort "
                                "and --dataset."),
]
CohortOpt = Annotated[
    Path | None, typer.Option("--cohort", help="Cohort definition (JSON or YAML), with --site.")
]
DatasetOpt = Annotated[
    Path | None,
    typer.Option("--dataset", help="Analysis-dataset spec (JSON or YAML) turning the cohort "
                                   "into one row per person, with --site."),
]
MinCellOpt = Annotated[int, typer.Option(help="Minimum cell size (≥ 5).")]
SecureOpt = Annotated[bool, typer.Option(
    "--secure", help="Secure aggregation: mask each site's sums (real X25519 + ChaCha20 "
                     "masks) so only network totals are combined.")]
PurposeOpt = Annotated[
    str, typer.Option(help="The study's purpose (site policies and consent, with --site).")
]


def run_sim(
    analysis: str,
    params: dict[str, Any],
    *,
    table: list[str] | None,
    site: list[str] | None = None,
    cohort: Path | None = None,
    dataset: Path | None = None,
    min_cell_size: int = 10,
    purpose: str = "research",
    quiet: bool = False,
    secure: bool = False,
    on_progress: Any = None,
) -> dict[str, Any]:
    """Run one analysis over ``--table`` CSVs or ``--site`` OMOP folders; errors name the
    option. Every command over tables or sites goes through here."""
    from healthspace.analyses import registry
    from healthspace.client.studyfile import read_document
    from healthspace.cohort.dataset import load_dataset
    from healthspace.cohort.models import load_cohort
    from healthspace.core.errors import InvalidInput
    from healthspace.sim import parse_site_args, parse_table_args, simulate_dirs, simulate_tables

    check_min_cell(min_cell_size)
    registry.get(analysis).parse_params(params)  # fail fast, naming the field
    if table and site:
        raise InvalidInput("give --table or --site, not both", field="table")
    if table:
        if cohort is not None or dataset is not None:
            raise InvalidInput("--cohort and --dataset apply to --site folders, not --table "
                               "files", field="cohort" if cohort is not None else "dataset")
        tables = parse_table_args(table)
        if not quiet:
            err.print(f"running {analysis} over {len(tables)} table(s)…")
        return simulate_tables(analysis, tables, params=params, min_cell_size=min_cell_size,
                               purpose=purpose, secure=secure, on_progress=on_progress)
    if site:
        sites = parse_site_args(site)
        definition = read_document(cohort, "cohort") if cohort is not None else None
        spec = read_document(dataset, "dataset") if dataset is not None else None
        if definition is not None:
            load_cohort(definition)  # fail fast, before loading any data
        if spec is not None:
            load_dataset(spec)
        if not quiet:
            err.print(f"loading {len(sites)} site(s) and running {analysis}…")
        return simulate_dirs(analysis, sites, params=params, cohort=definition, dataset=spec,
                             min_cell_size=min_cell_size, purpose=purpose, secure=secure,
                             on_progress=on_progress)
    raise InvalidInput("give --table NAME=FILE.csv or --site NAME=DIR (repeatable)",
                       field="table")


@app.command("glm")
def glm(
    formula: Annotated[str, typer.Option("--formula", help="e.g. 'y ~ x1 + x2 + C(group)'.")],
    family: Annotated[str, typer.Option(help="gaussian, binomial or poisson.")] = "gaussian",
    offset: Annotated[str | None, typer.Option(help="Offset column (linear-predictor scale).")]
    = None,
    weights: Annotated[str | None, typer.Option(help="Variance-weights column "
                                                     "(statsmodels var_weights).")] = None,
    table: TableOpt = None,
    site: SitesOpt = None,
    cohort: CohortOpt = None,
    dataset: DatasetOpt = None,
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """An exact pooled GLM over per-site tables or OMOP folders (nodes release only
    aggregates)."""
    from rich.table import Table

    params = {"formula": formula, "family": family, "offset": offset, "weights": weights}
    result = run_sim("glm", params, table=table, site=site, cohort=cohort, dataset=dataset,
                     min_cell_size=min_cell_size, purpose=purpose, quiet=json_out,
                     secure=secure)
    if json_out:
        emit_json(result)
        return
    view = Table(title=f"GLM ({result['family']}), n={result['nobs']}, "
                       f"deviance={result['deviance']:.4f}, AIC={result['aic']:.4f}")
    for column in ("term", "coef", "SE", "z", "p", "95% CI"):
        view.add_column(column, justify="left" if column == "term" else "right")
    for term, coef in result["params"].items():
        lo, hi = result["conf_int"][term]
        view.add_row(term, f"{coef:.6g}", f"{result['bse'][term]:.6g}",
                     f"{result['zvalues'][term]:.3f}", f"{result['pvalues'][term]:.3g}",
                     f"[{lo:.4g}, {hi:.4g}]")
    out.print(view)


def check_plot_path(path: Path) -> None:
    """A writable ``.png`` path, checked before any work is done."""
    from healthspace.core.errors import InvalidInput

    if path.suffix.lower() != ".png":
        raise InvalidInput(f"the plot is written as PNG; name it *.png, not {path.name!r}",
                           field="plot")
    if not path.parent.exists():
        raise InvalidInput(f"folder {path.parent} does not exist", field="plot")


def _km_rows(curve: dict[str, Any], limit: int = 10) -> list[tuple[str, ...]]:
    """Rows (time, at risk, S, CI) of one curve; the first and last few if it is long."""
    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    rows: list[tuple[str, ...]] = [(f"{t:g}", str(r), fmt(s), f"[{fmt(lo)}, {fmt(hi)}]")
            for t, r, s, lo, hi in zip(curve["timeline"], curve["at_risk"], curve["survival"],
                                       curve["ci_lower"], curve["ci_upper"], strict=True)]
    if len(rows) > limit:
        half = limit // 2
        rows = [*rows[:half], ("…", "…", "…", "…"), *rows[-half:]]
    return rows


@app.command("km")
def km(
    duration: Annotated[str, typer.Option("--duration", help="Time-to-event column (≥ 0).")],
    event: Annotated[str, typer.Option("--event", help="Event indicator column (1 event, "
                                                       "0 censored).")],
    group: Annotated[str | None, typer.Option(help="Group column: one curve per value and "
                                                   "the log-rank test.")] = None,
    table: TableOpt = None,
    site: SitesOpt = None,
    cohort: CohortOpt = None,
    dataset: DatasetOpt = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write the curves as a PNG "
                                                             "image to this file.")] = None,
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Exact pooled Kaplan–Meier curves (and log-rank test) over per-site tables or OMOP
    folders."""
    from rich.table import Table

    params = {"duration": duration, "event": event, "group": group}
    if plot is not None:
        check_plot_path(plot)
    result = run_sim("km", params, table=table, site=site, cohort=cohort, dataset=dataset,
                     min_cell_size=min_cell_size, purpose=purpose, quiet=json_out,
                     secure=secure)
    if plot is not None:
        from healthspace.analyses.plots import plot_km

        plot_km(result, plot, group=group)
        if not json_out:
            err.print(f"plot written to {plot}")
    if json_out:
        emit_json(result)
        return
    curves = result["groups"] if group is not None else {"all": result}
    for name, curve in curves.items():
        median = "not reached" if curve["median"] is None else f"{curve['median']:g}"
        title = (f"Kaplan–Meier, {group}={name}" if group is not None else "Kaplan–Meier")
        view = Table(title=f"{title} (median survival: {median})")
        for column in ("time", "at risk", "S(t)", "95% CI"):
            view.add_column(column, justify="right")
        for row in _km_rows(curve):
            view.add_row(*row)
        out.print(view)
    if group is not None:
        if result["logrank_p"] is None:
            out.print("log-rank test: needs at least two groups")
        else:
            out.print(f"log-rank test: statistic={result['logrank_statistic']:.4f}, "
                      f"p={result['logrank_p']:.4g}")


# Commands defined in their own modules register themselves on ``app``.
from healthspace.cli import sim_cox, sim_stats, sim_train  # noqa: E402,F401
