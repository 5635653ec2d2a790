"""``healthspace approvals``: data holders list, approve and reject studies for their nodes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client
from healthspace.cli.output import emit_json, out
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Approve or reject studies for your organisation's nodes.",
                  no_args_is_help=True)

STATUSES = ("pending", "approved", "rejected", "expired")


def _show(view: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(view)
        return
    missing = ", ".join(view["missing_steps"]) or "none"
    out.print(f"study {view['study_id']} on {view['node']}: {view['status']} "
              f"(done: {', '.join(view['steps_done']) or 'none'}; missing: {missing})",
              highlight=False)


@app.command("list")
def list_approvals(
    status: Annotated[str, typer.Option(help="pending|approved|rejected|expired")] = "pending",
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """List approvals (default: pending) on the nodes you may act for."""
    if status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}; one of {', '.join(STATUSES)}",
                           field="status")
    with client(hub, token) as c:
        rows = c.approvals(status)
    if json_out:
        emit_json(rows)
        return
    table = Table("study", "node", "analysis", "purpose", "consumer", "mode", "missing",
                  "expires", title=f"{status} approvals")
    for r in rows:
        table.add_row(str(r["study_id"]), r["node"], r["analysis"], r["purpose"],
                      f"{r['consumer']} ({r['consumer_org']})", r["approval_mode"],
                      ", ".join(r["missing_steps"]), str(r["expires_at"] or ""))
    out.print(table)


@app.command("approve")
def approve(
    study_id: int,
    node: str,
    step: Annotated[str | None, typer.Option(help="steward|ethics (default: the next)")] = None,
    comment: Annotated[str | None, typer.Option(help="A note kept with the approval.")] = None,
    ethics_ref: Annotated[
        str | None, typer.Option("--ethics-ref", help="Ethics committee reference (ethics).")
    ] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Approve the next step (steward, then ethics for two-level) of a study on NODE."""
    with client(hub, token) as c:
        view = c.approve(study_id, node, step=step, comment=comment, ethics_ref=ethics_ref)
    _show(view, json_out)


@app.command("reject")
def reject(
    study_id: int,
    node: str,
    comment: Annotated[str, typer.Option(help="Why; shown to the consumer.")],
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Reject a study on NODE; the comment reaches the consumer."""
    with client(hub, token) as c:
        view = c.reject(study_id, node, comment)
    _show(view, json_out)
