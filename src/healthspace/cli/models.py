"""``healthspace models``: the model registry — list, show a model card, download weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.train_render import calibration_table, sites_table
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="The model registry: trained models, their cards and weights.",
                  no_args_is_help=True)


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}"


@app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option(help="Only versions of this model.")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Registered models you may see, newest first."""
    with client(hub, token) as c:
        views = c.models(name)
    if json_out:
        emit_json([v.model_dump(mode="json") for v in views])
        return
    table = Table("id", "name", "version", "kind", "study", "nodes", "AUC", "Brier",
                  "release", "created", title="model registry")
    for v in views:
        table.add_row(str(v.id), v.name, str(v.version), v.kind, str(v.study_id),
                      ", ".join(v.nodes), _fmt(v.metrics.get("auc")),
                      _fmt(v.metrics.get("brier")), v.release, v.created_at.isoformat())
    out.print(table)


@app.command("show")
def show(
    model_id: int,
    dataset_out: Annotated[Path | None, typer.Option(
        help="Write the model's analysis-dataset spec here (reuse it to score).")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """A model's card: intended use, training population, performance overall and by site,
    provenance and the data holders' contribution."""
    with client(hub, token) as c:
        view = c.model(model_id)
    if dataset_out is not None:
        if view.dataset is None:
            raise InvalidInput("this model was trained without an analysis dataset",
                               field="dataset-out")
        dataset_out.write_text(json.dumps(view.dataset, indent=2) + "\n")
    if json_out:
        emit_json(view.model_dump(mode="json"))
        return
    card = view.card
    out.print(f"[bold]{view.name} v{view.version}[/] ({view.kind}), model {view.id}, "
              f"study {view.study_id}, owner {view.owner}, release {view.release}")
    out.print(f"target {card.target}; features {', '.join(card.features)}")
    if card.intended_use:
        out.print(f"intended use: {card.intended_use}")
    pop = card.training_population
    out.print(f"training population: {pop.get('n_train')} rows, {pop.get('events')} events "
              f"(prevalence {pop.get('prevalence', 0):.3f}); validation rows "
              f"{pop.get('n_valid', 0)}")
    out.print(f"rounds {view.rounds} (model of round {view.selected_round}); "
              f"AUC {_fmt(card.performance.get('auc'))} ± "
              f"{_fmt(card.performance.get('auc_binning_error'))} (binning), Brier "
              f"{_fmt(card.performance.get('brier'))}")
    contribution = Table("node", "persons", title="contribution (as metered)")
    for node, figures in view.contribution.items():
        band = figures.get("band")
        contribution.add_row(node, f"≈{figures['persons']} (band {band})" if band
                             else str(figures["persons"]))
    out.print(contribution)
    out.print(sites_table(card.performance_by_site))
    if card.performance.get("calibration"):
        out.print(calibration_table(card.performance))
    for item in card.limitations:
        out.print(f"- {item}")


@app.command("download")
def download(
    model_id: int,
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the model (JSON).")],
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Download a model's weights where the contributing nodes' policies release them."""
    if not out_file.parent.exists():
        raise InvalidInput(f"folder {out_file.parent} does not exist", field="out")
    with client(hub, token) as c:
        package = c.model_weights(model_id)
    out_file.write_text(json.dumps(package.model_dump(mode="json"), indent=2) + "\n")
    if json_out:
        emit_json({"model_id": package.id, "file": str(out_file)})
    else:
        err.print(f"model {package.id} ({package.name} v{package.version}) written to {out_file}")
