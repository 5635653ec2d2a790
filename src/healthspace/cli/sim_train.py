"""``healthspace sim train``: federated training over local tables or OMOP folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from healthspace.cli.common import JsonOpt, split_list
from healthspace.cli.output import emit_json, err, out
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
from healthspace.cli.train_render import (
    calibration_table,
    metrics_table,
    rounds_table,
    sites_table,
    training_progress,
)
from healthspace.core.errors import InvalidInput


def hidden_sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in split_list(text)]
    except ValueError:
        raise InvalidInput(f"expected layer sizes like 16 or 32,16, got {text!r}",
                           field="hidden") from None


def show_training(result: dict[str, Any]) -> None:
    """The people's view of a training result (CLI study results use it too)."""
    out.print(rounds_table(result["rounds"]))
    out.print(metrics_table(result))
    out.print(calibration_table(result["metrics"]))
    out.print(sites_table(result["sites"]))
    for warning in result.get("warnings", []):
        err.print(f"[yellow]warning:[/] {warning}")
    if result.get("dp"):
        dp = result["dp"]
        out.print(f"differential privacy: ε={dp['epsilon']:g}, δ={dp['delta']:g} over "
                  f"{dp['rounds']} rounds (noise multiplier {dp['noise_multiplier']:.3g}, "
                  f"clip {dp['clip']:g}; unit: {dp['unit']})")


@app.command("train")
def train(
    target: Annotated[str, typer.Option(help="The binary (0/1) outcome column.")],
    features: Annotated[str, typer.Option(help="Comma-separated feature columns.")],
    model: Annotated[str, typer.Option(help="logistic or mlp.")] = "logistic",
    hidden: Annotated[str, typer.Option(help="MLP hidden layer sizes, e.g. 16 or 32,16.")]
    = "16",
    strategy: Annotated[str, typer.Option(help="fedavg or fedprox.")] = "fedavg",
    mu: Annotated[float, typer.Option(help="FedProx proximal weight μ.")] = 0.01,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 20,
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = 32,
    learning_rate: Annotated[float, typer.Option("--lr", help="SGD learning rate.")] = 0.1,
    fraction: Annotated[float, typer.Option(help="Share of nodes training each round.")] = 1.0,
    min_nodes: Annotated[int, typer.Option(help="Stop if fewer nodes report.")] = 1,
    patience: Annotated[int | None, typer.Option(help="Early stopping: rounds without "
                                                      "improvement.")] = None,
    holdout: Annotated[float, typer.Option(help="Share of each site's rows held out for "
                                                "validation (0–0.5).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = 0,
    bins: Annotated[int, typer.Option(help="Score-histogram bins for evaluation.")] = 1000,
    dp_epsilon: Annotated[float | None, typer.Option(help="Train with DP: total ε.")] = None,
    dp_delta: Annotated[float, typer.Option(help="DP δ.")] = 1e-5,
    dp_clip: Annotated[float, typer.Option(help="L2 clip of each node's update.")] = 1.0,
    save_model: Annotated[Path | None, typer.Option(help="Write the trained model (JSON).")]
    = None,
    table: TableOpt = None,
    site: SitesOpt = None,
    cohort: CohortOpt = None,
    dataset: DatasetOpt = None,
    min_cell_size: MinCellOpt = 10,
    purpose: PurposeOpt = "research",
    secure: SecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a model on every site together (FedAvg/FedProx); sites send only summable
    updates and score histograms, never rows or predictions."""
    params: dict[str, Any] = {
        "target": target, "features": split_list(features), "model": model,
        "hidden": hidden_sizes(hidden), "strategy": strategy, "mu": mu, "rounds": rounds,
        "local_epochs": local_epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "fraction": fraction, "min_nodes": min_nodes,
        "patience": patience, "holdout": holdout, "seed": seed, "bins": bins,
        "dp_epsilon": dp_epsilon, "dp_delta": dp_delta, "dp_clip": dp_clip,
    }
    if save_model is not None and not save_model.parent.exists():
        raise InvalidInput(f"folder {save_model.parent} does not exist", field="save-model")
    with training_progress(rounds, enabled=not json_out) as progress:
        result = run_sim("fl_train", params, table=table, site=site, cohort=cohort,
                         dataset=dataset, min_cell_size=min_cell_size, purpose=purpose,
                         quiet=json_out, secure=secure, on_progress=progress)
    if save_model is not None:
        save_model.write_text(json.dumps(result["model"], indent=2) + "\n")
    if json_out:
        emit_json(result)
        return
    show_training(result)
