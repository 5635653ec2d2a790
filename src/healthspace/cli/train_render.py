"""Training progress (a rich bar with loss, AUC and nodes) and the trained model's tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from healthspace.cli.output import err


def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def describe(entry: dict[str, Any]) -> str:
    """One progress entry as text: loss, AUC (validation too), nodes reporting, dropped."""
    text = f"loss {_fmt(entry.get('loss'))}  AUC {_fmt(entry.get('auc'))}"
    if entry.get("validation_loss") is not None:
        text += (f"  val loss {_fmt(entry.get('validation_loss'))}  "
                 f"val AUC {_fmt(entry.get('validation_auc'))}")
    text += f"  nodes {entry.get('nodes', '–')}"
    return text


@contextmanager
def training_progress(total: int, enabled: bool = True
                      ) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A callback taking progress entries (``round``, ``loss``, ``auc``…) drawn on stderr;
    a dropped node prints a warning line."""
    if not enabled:
        yield lambda entry: None
        return
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  console=err, transient=False) as bar:
        task = bar.add_task("training", total=max(total, 1), status="")

        def update(entry: dict[str, Any]) -> None:
            for name in entry.get("dropped") or []:
                bar.console.print(f"[yellow]warning:[/] node {name} dropped from round "
                                  f"{entry.get('round')}; training continues")
            done = total if entry.get("final") else int(entry.get("round", 0))
            bar.update(task, completed=done, status=describe(entry))

        yield update


def rounds_table(rounds: list[dict[str, Any]]) -> Table:
    view = Table(title="Training rounds")
    columns = ["round", "loss", "AUC", "Brier", "val loss", "val AUC", "nodes", "dropped"]
    for column in columns:
        view.add_column(column, justify="right")
    for entry in rounds:
        view.add_row(str(entry.get("round")), _fmt(entry.get("loss")), _fmt(entry.get("auc")),
                     _fmt(entry.get("brier")), _fmt(entry.get("validation_loss")),
                     _fmt(entry.get("validation_auc")), str(entry.get("nodes", "–")),
                     ", ".join(entry.get("dropped") or []) or "–")
    return view


def metrics_table(result: dict[str, Any]) -> Table:
    """The chosen model's in-sample (and validation) metrics."""
    view = Table(title=f"Model after round {result.get('selected_round')}"
                       + (" (stopped early)" if result.get("stopped_early") else ""))
    for column in ("rows", "n", "AUC", "± binning", "Brier", "log loss"):
        view.add_column(column, justify="right")
    for label, block in (("training", result.get("metrics")),
                         ("validation", result.get("validation"))):
        if block:
            view.add_row(label, str(block["n"]), _fmt(block["auc"]),
                         _fmt(block["auc_binning_error"], 5), _fmt(block["brier"]),
                         _fmt(block["loss"]))
    return view


def calibration_table(block: dict[str, Any]) -> Table:
    view = Table(title="Calibration (training rows)")
    for column in ("predicted risk", "n", "mean predicted", "observed"):
        view.add_column(column, justify="right")
    for row in block.get("calibration", []):
        lo, hi = row["bin"]
        if row.get("suppressed"):
            view.add_row(f"{lo:.1f}–{hi:.1f}", "<k", "suppressed", "suppressed")
        else:
            view.add_row(f"{lo:.1f}–{hi:.1f}", str(row["n"]), _fmt(row["predicted"], 3),
                         _fmt(row["observed"], 3))
    return view


def sites_table(sites: dict[str, Any]) -> Table:
    view = Table(title="Performance by site (where disclosure rules allow)")
    for column in ("site", "n", "AUC", "Brier"):
        view.add_column(column, justify="right")
    for name, figures in sites.items():
        if figures is None:
            view.add_row(name, "withheld", "withheld", "withheld")
        else:
            view.add_row(name, str(figures["n"]), _fmt(figures["auc"]), _fmt(figures["brier"]))
    return view
