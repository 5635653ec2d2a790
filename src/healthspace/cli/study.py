"""``healthspace study``: submit studies, follow them, read results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.render import exit_code_for, render_study
from healthspace.client.sdk import HubClient, results_document
from healthspace.client.studyfile import load_study_file
from healthspace.core.enums import ExitCode, StudyStatus
from healthspace.core.errors import InvalidInput
from healthspace.core.models import StudyView

app = typer.Typer(help="Submit and follow studies (consumers).", no_args_is_help=True)


def _finish(view: StudyView, json_out: bool) -> None:
    if json_out:
        emit_json(results_document(view))
    elif view.analysis == "fl_train" and view.result:
        from healthspace.cli.sim_train import show_training

        out.print(f"study {view.id} fl_train: {view.status.value}")
        show_training(view.result)
        model = view.result.get("model") or {}
        if "id" in model:
            out.print(f"registered as model {model['id']} ({model['name']} "
                      f"v{model['version']}, release {model['release']}): "
                      f"healthspace models show {model['id']}")
    elif view.analysis == "similar_patients" and view.result:
        from healthspace.cli.cds_render import show_lookup

        out.print(f"study {view.id} similar_patients: {view.status.value}")
        show_lookup(out, view.result)
    else:
        render_study(out, view, breakdown=True)
    code = exit_code_for(view.status) if view.status.terminal else ExitCode.OK
    raise typer.Exit(int(code))


@app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="Study file (JSON or YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 600.0,
    preview: Annotated[bool, typer.Option(
        "--preview", help="Submit as a feasibility preview (cohort_count: obfuscated or DP "
                          "count, no approvals, rate-limited).")] = False,
    secure: Annotated[bool, typer.Option(
        "--secure", help="Secure aggregation: the hub learns only network sums (on anyway "
                         "where a node's policy requires it).")] = False,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Submit a study; with --wait, print its result when it finishes."""
    spec = load_study_file(file)
    if preview:  # the same as ``preview: true`` in the study file
        spec = spec.model_copy(update={"preview": True})
    if secure:  # the same as ``secure_aggregation: true`` in the study file
        spec = spec.model_copy(update={"secure_aggregation": True})
    with client(hub, token) as c:
        view = c.submit(spec)
        err.print(f"study {view.id} submitted ({view.status.value}) to {', '.join(view.nodes)}")
        if wait and view.analysis == "fl_train" and not json_out:
            view = _follow_training(c, view, timeout)
        elif wait:
            with err.status(f"waiting for study {view.id}") as status:
                def show(v: StudyView) -> None:
                    done = sum(t.status.terminal for t in v.tasks)
                    status.update(f"study {v.id}: {v.status.value}, {done}/{len(v.tasks)} tasks")
                view = c.wait(view.id, timeout=timeout, on_update=show)
        if wait:
            if not view.status.terminal:
                err.print(f"study {view.id} still {view.status.value} after {timeout:.0f}s")
                raise typer.Exit(int(ExitCode.ERROR))
            _finish(view, json_out)
    if json_out:
        emit_json(view.model_dump(mode="json"))


def _follow_training(c: HubClient, view: StudyView, timeout: float) -> StudyView:
    """Wait for a training study, drawing each round's loss, AUC and nodes as they come."""
    import time

    from healthspace.cli.train_render import training_progress

    deadline = time.monotonic() + timeout
    seen = 0
    total = int(view.params.get("rounds") or 1)
    with training_progress(total) as update:
        while True:
            entries = c.progress(view.id).entries
            for item in entries[seen:]:
                update(item.entry)
            seen = len(entries)
            if view.status.terminal or time.monotonic() >= deadline:
                return view
            view = c.study(view.id, wait=min(2.0, max(deadline - time.monotonic(), 0.1)))


@app.command("progress")
def progress(
    study_id: int, hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """What a study reported round by round (training: loss, AUC, nodes reporting)."""
    from healthspace.cli.train_render import rounds_table

    with client(hub, token) as c:
        report = c.progress(study_id)
    if json_out:
        emit_json(report.model_dump(mode="json"))
        return
    out.print(f"study {report.study_id} {report.analysis}: {report.status}, hub round "
              f"{report.round}" + (f" of training rounds {report.total_rounds}"
                                   if report.total_rounds else ""))
    out.print(rounds_table([e.entry for e in report.entries]))


@app.command("status")
def status(
    study_id: int, hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Show a study's status and per-node progress."""
    with client(hub, token) as c:
        view = c.study(study_id)
    if json_out:
        emit_json(view.model_dump(mode="json"))
        return
    table = Table("node", "round", "status", "queued", "finished", "error",
                  title=f"study {view.id} {view.analysis}: {view.status.value}")
    for t in view.tasks:
        table.add_row(t.node, str(t.round), t.status.value, t.queued_at.isoformat(),
                      t.finished_at.isoformat() if t.finished_at else "", t.error or "")
    out.print(table)


@app.command("results")
def results(
    study_id: int, hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Print a finished study's results (exit 4 when only some nodes answered)."""
    with client(hub, token) as c:
        view = c.study(study_id)
    if not view.status.terminal:
        err.print(f"study {view.id} is {view.status.value}; no results yet")
        raise typer.Exit(int(ExitCode.ERROR))
    _finish(view, json_out)


@app.command("list")
def list_studies(
    status_filter: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """List the studies you may see."""
    if status_filter is not None and status_filter not in {s.value for s in StudyStatus}:
        known = ", ".join(s.value for s in StudyStatus)
        raise InvalidInput(f"unknown status {status_filter!r}; one of {known}", field="status")
    with client(hub, token) as c:
        views = c.studies(status_filter)
    if json_out:
        emit_json([v.model_dump(mode="json") for v in views])
        return
    table = Table("id", "analysis", "status", "nodes", "submitted by", "created")
    for v in views:
        table.add_row(str(v.id), v.analysis, v.status.value, ", ".join(v.nodes),
                      v.submitted_by, v.created_at.isoformat())
    out.print(table)


@app.command("cancel")
def cancel(
    study_id: int, hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Cancel a study that has not finished."""
    with client(hub, token) as c:
        view = c.cancel(study_id)
    if json_out:
        emit_json(view.model_dump(mode="json"))
    else:
        out.print(f"study {view.id}: {view.status.value}")


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Study file (JSON or YAML).")],
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Dry run: what each node's policy would decide for this study (nothing is submitted)."""
    spec = load_study_file(file)
    with client(hub, token) as c:
        decisions = c.check(spec)
    if json_out:
        emit_json({"nodes": {n: d.model_dump(mode="json") for n, d in decisions.items()}})
        return
    table = Table("node", "outcome", "approval", "min cell", "reasons", title="policy check")
    for name, d in decisions.items():
        table.add_row(name, d.outcome.value, d.approval_mode.value, str(d.min_cell_size),
                      "; ".join(r.message for r in d.reasons))
    out.print(table)


@app.command("feedback")
def feedback(
    study_id: int,
    rating: Annotated[int, typer.Option(min=1, max=5, help="1 (poor) to 5 (excellent).")],
    comment: Annotated[str | None, typer.Option(help="Up to 2000 characters.")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Rate a finished study you submitted (once)."""
    with client(hub, token) as c:
        given = c.feedback(study_id, rating, comment)
    if json_out:
        emit_json(given.model_dump(mode="json"))
    else:
        out.print(f"study {study_id}: feedback {given.rating}/5 recorded")
