"""Entry point: builds the command tree and turns errors into messages and exit codes."""

from __future__ import annotations

import sys

import click
import typer
from pydantic import ValidationError

from healthspace.cli import (
    admin,
    approvals,
    audit,
    backup,
    billing,
    cds,
    claims,
    demo,
    hub,
    models,
    node,
    payer,
    registry,
    sim,
    study,
    synth,
)
from healthspace.cli.output import err
from healthspace.core.enums import ExitCode
from healthspace.core.errors import HealthspaceError, invalid_from_validation

app = typer.Typer(
    name="healthspace",
    help="A trusted health data space: federated, governed analytics where data never moves.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(hub.app, name="hub")
app.add_typer(node.app, name="node")
app.add_typer(admin.org_app, name="org")
app.add_typer(admin.user_app, name="user")
app.add_typer(admin.token_app, name="token")
app.add_typer(study.app, name="study")
app.add_typer(registry.app, name="registry")
app.add_typer(cds.app, name="cds")
app.add_typer(models.app, name="models")
app.add_typer(payer.app, name="payer")
app.add_typer(claims.app, name="claims")
app.add_typer(sim.app, name="sim")
app.add_typer(audit.app, name="audit")
app.add_typer(backup.backup_app, name="backup")
app.add_typer(backup.restore_app, name="restore")
app.add_typer(approvals.app, name="approvals")
app.add_typer(billing.app, name="billing")
app.add_typer(billing.meter_app, name="meter")
app.add_typer(billing.sla_app, name="sla")
app.command("kpi")(billing.kpi)
app.command("synth")(synth.synth)
app.command("demo")(demo.demo)


def _fail(exc: HealthspaceError) -> int:
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return int(exc.exit_code)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the contract's codes, never a traceback)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="healthspace", standalone_mode=False)
    except (click.exceptions.Abort, typer.Abort):
        err.print("aborted")
        return int(ExitCode.ERROR)
    except (click.exceptions.ClickException, typer.TyperException) as exc:
        # Usage errors: Typer vendors its own click, so both hierarchies are caught.
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=sys.stderr)
        else:
            err.print(f"error: {exc}")
        return int(ExitCode.INVALID)
    except (click.exceptions.Exit, typer.Exit) as exc:
        return int(exc.exit_code)
    except HealthspaceError as exc:
        return _fail(exc)
    except ValidationError as exc:
        return _fail(invalid_from_validation(exc))
    except KeyboardInterrupt:
        return 130
    return int(code) if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
