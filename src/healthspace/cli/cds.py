"""``healthspace cds``: clinical decision support — what happened to patients like this one
(similar-patient lookup, "one patient, one plan")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from healthspace.cli.cds_render import show_lookup
from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client, split_list
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.render import exit_code_for
from healthspace.client.lookup import PRESETS, lookup_spec
from healthspace.core.enums import ExitCode
from healthspace.core.models import StudySpec, StudyView

app = typer.Typer(help="Clinical decision support: similar-patient lookups (consumers).",
                  no_args_is_help=True)


def spec_from_options(file: Path, treatments: str | None, treatment: list[str] | None,
                      outcome: list[str] | None, k: int | None, nodes: str | None) -> StudySpec:
    """The study the command line asks for; every mistake is an error naming its option."""
    return lookup_spec(file, presets=split_list(treatments), treatments=treatment or [],
                       outcomes=outcome or [], k=k,
                       nodes=split_list(nodes) if nodes is not None else None)


@app.command("lookup")
def lookup(
    file: Annotated[Path, typer.Argument(help="Profile file (PROFILE.json, or YAML): see "
                                              "docs/similar-patients.md#using-the-lookup.")],
    treatments: Annotated[str | None, typer.Option(
        "--treatments", help="Built-in treatments to compare, comma-separated (healthspace "
                             "cds treatments lists them), e.g. insulin,sulfonylurea.")] = None,
    treatment: Annotated[list[str] | None, typer.Option(
        "--treatment", help="A treatment of your own: NAME=CODE\\[,CODE...]\\[@DAYS] (started "
                            "within DAYS of the index date, default 90); repeatable.")] = None,
    outcome: Annotated[list[str] | None, typer.Option(
        "--outcome", help="An outcome, replacing the file's: NAME=CODE\\[,CODE...]\\[@DAYS] or "
                          "death@DAYS; repeatable. Default: death within 365 days.")] = None,
    k: Annotated[int | None, typer.Option(
        "--k", help="Similar patients per node (10-5000; default 200).")] = None,
    nodes: Annotated[str | None, typer.Option(
        "--nodes", help="Comma-separated node names (default: every hospital node).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 600.0,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Find the patients most like this one at every node and show what each treatment was
    followed by: matched per node, the similarity distribution, outcome rates and
    Kaplan–Meier curves per treatment."""
    spec = spec_from_options(file, treatments, treatment, outcome, k, nodes)
    with client(hub, token) as c:
        view = c.submit(spec)
        err.print(f"study {view.id} submitted ({view.status.value}) to {', '.join(view.nodes)}")
        with err.status(f"waiting for study {view.id}") as status:
            def show(v: StudyView) -> None:
                done = sum(t.status.terminal for t in v.tasks)
                status.update(f"study {v.id}: {v.status.value}, round {v.round}, "
                              f"{done}/{len(v.tasks)} tasks")
            view = c.wait(view.id, timeout=timeout, on_update=show)
    if not view.status.terminal:
        err.print(f"study {view.id} still {view.status.value} after {timeout:.0f}s; "
                  f"healthspace study results {view.id} shows it later")
        raise typer.Exit(int(ExitCode.ERROR))
    finish(view, json_out)


def finish(view: StudyView, json_out: bool) -> None:
    """Print a finished lookup — the result JSON only, or the tables — and exit with the
    study's code."""
    if json_out:
        emit_json(view.result if view.result is not None else {
            "study_id": view.id, "status": view.status.value, "error": view.error})
    else:
        out.print(f"study {view.id} similar_patients: {view.status.value}"
                  + (f" — {view.error}" if view.error else ""), highlight=False)
        if view.result:
            show_lookup(out, view.result)
    raise typer.Exit(int(exit_code_for(view.status)))


@app.command("treatments")
def treatments_list(json_out: JsonOpt = False) -> None:
    """The built-in treatments --treatments names, with their codes."""
    if json_out:
        emit_json({name: list(codes) for name, codes in PRESETS.items()})
        return
    table = Table("name", "codes", title="built-in treatments (--treatments)")
    for name, codes in PRESETS.items():
        table.add_row(name, ", ".join(codes))
    out.print(table)
