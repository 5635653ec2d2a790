"""``healthspace demo``: the main job, end to end on this machine."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthspace.cli.output import emit_json, err, out, progress_bar
from healthspace.cli.render import breakdown_table, count_table, exit_code_for, secure_note
from healthspace.core.enums import ExitCode

if TYPE_CHECKING:
    from healthspace.demo import DemoResult
    from healthspace.launch import LocalFederation


def demo(
    persons: Annotated[int, typer.Option(help="Persons per synthetic site.")] = 20_000,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep all state here (hub DB, stores, logs).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Leave hub and nodes running; print the URLs.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Synthetic data seed.")] = 42,
    scenario: Annotated[str, typer.Option(
        help="feasibility (a governed trial-feasibility study) or payer (DRG/DIP weights, "
             "fraud screening with injected fraud, the hospitals' evidence check and an "
             "insurer's claim check)")] = "feasibility",
) -> None:
    """Synthetic hospitals + payer, a real hub and nodes on loopback, a feasibility study
    (or, with --scenario payer, the bureau's analytics and checks)."""
    from healthspace.core.errors import InvalidInput
    from healthspace.demo import run_demo

    if persons < 100:
        raise InvalidInput("use at least 100 persons per site", field="persons")
    if scenario not in ("feasibility", "payer"):
        raise InvalidInput(f"unknown scenario {scenario!r}; one of feasibility, payer",
                           field="scenario")
    if scenario == "payer":
        if serve:
            raise InvalidInput("--serve applies to the feasibility scenario", field="serve")
        from healthspace.cli import demo_payer

        demo_payer.run(persons, workdir, json_out, seed)
        return

    def say(msg: str) -> None:
        err.print(f"[cyan]demo[/] {msg}", highlight=False)

    def hold(fed: LocalFederation, result: DemoResult) -> None:
        if serve:
            _serve(fed, result, json_out)

    with _stop_on_signals(serve), progress_bar(not json_out) as progress:
        result = run_demo(persons=persons, workdir=workdir, serve=serve, seed=seed, say=say,
                          progress=progress, keep=hold)
    if not serve:
        _report(result, json_out)
    study = result.studies[0]
    code = exit_code_for(study.status)
    total = (study.result or {}).get("total")
    if code == ExitCode.OK and total != result.pooled_count:
        err.print(f"[bold red]federated total {total} != pooled SQL {result.pooled_count}[/]")
        code = ExitCode.ERROR
    if code == ExitCode.OK and not result.audit.get("ok"):
        err.print("[bold red]an audit ledger failed verification[/]")
        code = ExitCode.ERROR
    if code == ExitCode.OK and not (result.metered() and result.settlement().get("balanced")):
        err.print("[bold red]a task has no meter record or the settlement does not balance[/]")
        code = ExitCode.ERROR
    raise typer.Exit(int(code))


@contextlib.contextmanager
def _stop_on_signals(active: bool) -> Iterator[None]:
    """While serving, SIGTERM and SIGINT (Ctrl-C) stop the demo: the federation's context
    closes, so the hub and every node are terminated before the command exits. SIGINT is
    set explicitly, as a shell starts background jobs with it ignored."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(fed: LocalFederation, result: DemoResult, json_out: bool) -> None:
    """Print where the console is and one sign-in token per role, then serve until stopped
    (SIGINT or SIGTERM). With ``--json`` stdout gets exactly one JSON line."""
    from healthspace.launch import LaunchError

    console = f"{fed.url}/console"
    tokens = result.role_tokens()
    if json_out:
        sys.stdout.write(json.dumps({"console_url": console, "tokens": tokens}) + "\n")
        sys.stdout.flush()
    else:
        _report(result, json_out)
        out.print(f"web console: {console}", highlight=False)
        for role, token in tokens.items():
            out.print(f"  sign in as {role}: {token}", highlight=False)
        err.print(f"hub API: {fed.url}  (OpenAPI: {fed.url}/docs)", highlight=False)
        for name, token in result.tokens.items():
            err.print(f"token {name}: {token}", highlight=False)
    err.print(f"state under {result.workdir}; press Ctrl-C to stop", highlight=False)
    try:
        while fed.hub_process is not None and fed.hub_process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        # Shutting down: a second signal must not cut the clean stop of hub and nodes short
        # (each process gets 10 s to exit before it is killed).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        err.print("stopping hub and nodes")
        return
    raise LaunchError(f"the hub exited while serving:\n{fed.log_tail('hub.log')}")


def _report(result: DemoResult, json_out: bool) -> None:
    if json_out:
        emit_json(result.to_json())
        return
    study = result.studies[0]
    nodes = {t.node: t.status.value for t in study.tasks}
    out.print(f"study {study.id} ({study.analysis}): [bold]{study.status.value}[/]")
    if study.result:
        out.print(count_table(study.result, title="T2D trial feasibility — persons per site",
                              nodes=nodes))
        if note := secure_note(study.result):
            out.print(note, highlight=False)
        first = next(iter(study.result.get("breakdown", {}).items()), None)
        if first:
            out.print(breakdown_table(*first))
        total = study.result.get("total")
        mark = "[green]equal[/]" if total == result.pooled_count else "[red]DIFFERENT[/]"
        out.print(f"pooled SQL over all hospitals' data: {result.pooled_count:,} — "
                  f"federated total {total:,}: {mark}")
    audit = result.audit
    if audit:
        ledgers = ", ".join(f"{name} {'intact' if n['ok'] else 'TAMPERED'} ({n['entries']})"
                            for name, n in audit["nodes"].items())
        mark = "[green]verified[/]" if audit["ok"] else "[red]FAILED[/]"
        out.print(f"audit ledgers {mark}: hub {audit['hub']['entries']} entries; {ledgers}; "
                  "hub and node executions cross-checked")
    _report_billing(result)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    out.print(f"timings: {timings}", highlight=False)


def _report_billing(result: DemoResult) -> None:
    """Meter totals, the invoice and earnings of the month, and the KPI table."""
    from healthspace.cli.billing_render import balance_line, kpi_table, statement_table

    if result.meters is not None:
        t = result.meters.totals
        out.print(f"metered: {int(t['records'])} task(s), {int(t['records_scanned']):,} "
                  f"records scanned, {int(t['persons']):,} persons contributing, "
                  f"{t['seconds']:.2f} compute s, {int(t['bytes']):,} bytes sent",
                  highlight=False)
    if result.platform is not None:
        out.print(statement_table(result.platform))
        out.print(balance_line(result.platform), highlight=False)
    if result.account is not None:
        a = result.account
        out.print(f"{a.org}: invoiced {a.currency} {a.invoiced:,.2f}; "
                  f"{a.currency} {a.available:,.2f} of its quota left", highlight=False)
    if result.kpi:
        out.print(kpi_table(result.kpi))
