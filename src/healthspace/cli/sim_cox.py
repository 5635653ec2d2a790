"""``healthspace sim cox``: the exact pooled Cox model, registered on ``healthspace sim``."""

from __future__ import annotations

import math
from typing import Annotated

import typer

from healthspace.cli.common import JsonOpt, split_list
from healthspace.cli.output import emit_json, out
from healthspace.cli.sim import (
    CohortOpt,
    DatasetOpt,
    MinCellOpt,
    PurposeOpt,
    SecureOpt,
    SitesOpt,
    TableOpt,
    app,
    run_sim,
)
from healthspace.core.errors import InvalidInput


def parse_covariates(value: str) -> list[str]:
    """``x1,x2`` → ``["x1", "x2"]``; an empty list names the option."""
    names = split_list(value)
    if not names:
        raise InvalidInput("give at least one covariate, e.g. --covariates age,sex",
                           field="covariates")
    return names


@app.command("cox")
def cox(
    duration: Annotated[str, typer.Option("--duration", help="Time-to-event column (≥ 0).")],
    event: Annotated[str, typer.Option("--event", help="Event indicator column (1 event, "
                                                       "0 censored).")],
    covariates: Annotated[str, typer.Option("--covariates", help="Comma-separated numeric or "
                                                                 "boolean columns: x1,x2.")],
    ties: Annotated[str, typer.Option("--ties", help="efron or breslow.")] = "efron",
    strata_by_site: Annotated[bool, typer.Option(
        "--strata-by-site/--no-strata-by-site",
        help="One baseline hazard per site (a stratified fit) instead of one pooled.")] = False,
    table: TableOpt = None,
    site: SitesOpt = None,
    cohort: CohortOpt = None,
    dataset: DatasetOpt = None,
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """An exact pooled Cox proportional-hazards model over per-site tables or OMOP folders
    (nodes release only risk-set sums)."""
    from rich.table import Table

    params = {"duration": duration, "event": event, "covariates": parse_covariates(covariates),
              "ties": ties, "strata_by_site": strata_by_site}
    result = run_sim("cox", params, table=table, site=site, cohort=cohort, dataset=dataset,
                     min_cell_size=min_cell_size, purpose=purpose, quiet=json_out,
                     secure=secure)
    if json_out:
        emit_json(result)
        return
    lr = result["lr_test"]
    concordance = result["concordance"]
    bound = result["concordance_error_bound"]
    c_text = ("–" if concordance is None else f"{concordance:.4f}"
              + (f" ± {bound:.4f}" if bound else " (exact)"))
    strata = ", stratified by site" if result["strata_by_site"] else ""
    view = Table(title=f"Cox ({result['ties']}{strata}), n={result['nobs']}, "
                       f"events={result['n_events']}, concordance={c_text}, "
                       f"LR χ²={lr['statistic']:.3f} on {lr['df']} df (p={lr['p']:.3g})")
    for column in ("covariate", "coef", "HR", "SE", "z", "p", "95% CI of HR"):
        view.add_column(column, justify="left" if column == "covariate" else "right")
    for name, coef in result["params"].items():
        lo, hi = result["conf_int"][name]
        view.add_row(name, f"{coef:.4g}", f"{result['hazard_ratios'][name]:.4g}",
                     f"{result['bse'][name]:.4g}", f"{result['zvalues'][name]:.3f}",
                     f"{result['pvalues'][name]:.3g}", f"{math.exp(lo):.4g}–{math.exp(hi):.4g}")
    out.print(view)
