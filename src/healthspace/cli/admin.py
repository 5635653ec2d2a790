"""``healthspace org|user|token``: administration through the hub API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, TokenOpt, client
from healthspace.cli.output import emit_json, err, out

org_app = typer.Typer(help="Organisations (hospitals, payer bureaus, consumers).",
                      no_args_is_help=True)
user_app = typer.Typer(help="Users and their roles.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


@org_app.command("add")
def org_add(
    name: str,
    kind: Annotated[str, typer.Option(help="operator|hospital|payer|data_centre|consumer")],
    display_name: Annotated[str | None, typer.Option(help="Human-readable name.")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Register an organisation."""
    with client(hub, token) as c:
        org = c.add_org(name, kind, display_name)
    if json_out:
        emit_json(org.model_dump(mode="json"))
    else:
        out.print(f"organisation {org.name} ({org.kind.value}) id={org.id}")


@org_app.command("list")
def org_list(hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List organisations."""
    with client(hub, token) as c:
        orgs = c.list_orgs()
    if json_out:
        emit_json([o.model_dump(mode="json") for o in orgs])
        return
    table = Table("id", "name", "kind", "display name")
    for o in orgs:
        table.add_row(str(o.id), o.name, o.kind.value, o.display_name or "")
    out.print(table)


@user_app.command("add")
def user_add(
    name: str,
    org: Annotated[str, typer.Option(help="Organisation name.")],
    role: Annotated[str, typer.Option(help="operator|data_holder_admin|consumer|auditor")],
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Add a user with one role in an organisation."""
    with client(hub, token) as c:
        user = c.add_user(name, org, role)
    if json_out:
        emit_json(user.model_dump(mode="json"))
    else:
        out.print(f"user {user.name} ({user.role.value} @ {user.org}) id={user.id}")


@user_app.command("password")
def user_password(
    user: Annotated[str | None, typer.Option(
        help="Another user's (operators only); default: your own.")] = None,
    hub: HubOpt = None, token: TokenOpt = None,
) -> None:
    """Set the password for signing in to the web console by name (prompted, not echoed)."""
    password = typer.prompt("new console password", hide_input=True,
                            confirmation_prompt=True)
    with client(hub, token) as c:
        c.set_password(password, user)
    err.print(f"console password set for {user or 'you'}")


@user_app.command("list")
def user_list(hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """List users."""
    with client(hub, token) as c:
        users = c.list_users()
    if json_out:
        emit_json([u.model_dump(mode="json") for u in users])
        return
    table = Table("id", "name", "org", "role")
    for u in users:
        table.add_row(str(u.id), u.name, u.org, u.role.value)
    out.print(table)


@token_app.command("issue")
def token_issue(
    user: str,
    label: Annotated[str | None, typer.Option(help="What the token is for.")] = None,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Issue an API token for a user (shown once; stored hashed)."""
    with client(hub, token) as c:
        issued = c.issue_token(user, label)
    if json_out:
        emit_json(issued.model_dump(mode="json"))
    else:
        err.print(f"token for {issued.principal} (shown only this once):")
        out.print(issued.token, highlight=False)
