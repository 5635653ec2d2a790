"""``healthspace claims check`` (an insurer's claim verification through the hub), ``payer
findings`` (what a payer node kept per claim) and the in-process ``sim evidence-check`` /
``sim claim-check``."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.common import HubOpt, JsonOpt, StoreOpt, TokenOpt, client
from healthspace.cli.output import emit_json, err, out
from healthspace.cli.payer import app as payer_app
from healthspace.cli.sim import MinCellOpt, SitesOpt, run_sim
from healthspace.cli.sim import app as sim_app
from healthspace.core.enums import ExitCode
from healthspace.core.errors import InvalidInput

app = typer.Typer(help="Commercial-insurance claim verification against the payer's settled "
                       "records (private set intersection).", no_args_is_help=True)

FileOpt = Annotated[Path, typer.Option(
    "--file", help="Claims CSV: claim_id, national_id, date, diagnosis, amount.")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", help="Write claim_id, outcome per claim to this CSV.")]
PeriodOpt = Annotated[str | None, typer.Option(
    help="Settled visits to match, START:END (ISO dates; public to the payer). Default: the "
         "span of the claims' dates.")]


def _period(text: str | None) -> tuple[date, date] | None:
    if text is None:
        return None
    try:
        start, end = (date.fromisoformat(part.strip()) for part in text.split(":"))
    except ValueError:
        raise InvalidInput(f"{text!r} is not START:END in ISO dates", field="period") from None
    if end < start:
        raise InvalidInput("the period ends before it starts", field="period")
    return start, end


def _report(rows: list[dict[str, str]], out_file: Path | None, json_out: bool,
            extra: dict[str, Any]) -> None:
    counts = Counter(r["outcome"] for r in rows)
    if out_file is not None:
        with open(out_file, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["claim_id", "outcome"])
            writer.writeheader()
            writer.writerows(rows)
        err.print(f"{len(rows)} outcomes written to {out_file}")
    if json_out:
        emit_json({**extra, "counts": dict(counts), "claims": rows})
        return
    table = Table("outcome", "claims", title=f"{len(rows)} claims checked against the settled "
                                             "records")
    for outcome in ("match", "amount_mismatch", "no_match"):
        table.add_row(outcome, str(counts.get(outcome, 0)))
    out.print(table)
    if out_file is None and len(rows) <= 50:
        detail = Table("claim_id", "outcome")
        for row in rows:
            detail.add_row(row["claim_id"], row["outcome"])
        out.print(detail)


@app.command("check")
def check(
    file: FileOpt,
    node: Annotated[str, typer.Option(help="The payer node holding the settled records.")]
    = "payer",
    period: PeriodOpt = None,
    out_file: OutOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 600.0,
    hub: HubOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Check claims against the payer's settled records: per claim match, amount_mismatch
    or no_match. Only blinded keys leave this machine; only this run can read the answer."""
    from healthspace.payer.claims import ClaimChecker, read_claims

    if out_file is not None and not out_file.parent.exists():
        raise InvalidInput(f"folder {out_file.parent} does not exist", field="out")
    claims = read_claims(file)
    checker = ClaimChecker(claims)
    try:
        with client(hub, token) as c:
            view = c.submit({"analysis": "claim_check", "nodes": [node],
                             "purpose": "commercial_insurance",
                             "title": f"claim check: {len(claims)} claims",
                             "params": checker.params(_period(period))})
            err.print(f"study {view.id} submitted ({view.status.value}) to {node}")
            with err.status(f"waiting for study {view.id}"):
                view = c.wait(view.id, timeout=timeout)
        if view.status.value != "completed" or view.result is None:
            reason = view.error or next((t.error for t in view.tasks if t.error), None)
            err.print(f"study {view.id} {view.status.value}" + (f": {reason}" if reason else ""))
            raise typer.Exit(int(ExitCode.ERROR))
        rows = checker.outcomes(view.result)
    finally:
        checker.close()
    _report(rows, out_file, json_out, {"study_id": view.id, "node": node})


@sim_app.command("claim-check")
def sim_claim_check(
    file: FileOpt,
    site: SitesOpt = None,
    period: PeriodOpt = None,
    purpose: Annotated[str, typer.Option(help="Purpose the site's policy must allow.")]
    = "research",
    out_file: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Claim verification against one payer folder or store, in this process."""
    from healthspace.payer.claims import ClaimChecker, read_claims

    checker = ClaimChecker(read_claims(file))
    try:
        result = run_sim("claim_check", checker.params(_period(period)), table=None, site=site,
                         purpose=purpose, quiet=json_out)
        rows = checker.outcomes(result)
    finally:
        checker.close()
    _report(rows, out_file, json_out, {"node": result.get("node")})


def evidence_table(result: dict[str, Any]) -> Table:
    rules = result["evidence_rules"]
    label = "" if rules["official"] else " — SAMPLE rules"
    k = result["k"]

    def cell(value: int | None) -> str:
        return f"<{k}" if value is None else str(value)

    table = Table("hospital", "claims", "supported", "unsupported", "no record",
                  title=f"evidence check, {rules['name']} {rules['version']}{label}: "
                        f"{result['claims_checked']} claims")
    for row in result["hospitals"]:
        table.add_row(row["hospital"], cell(row["claims"]), cell(row["supported"]),
                      cell(row["unsupported"]), cell(row["no_record"]))
    return table


@sim_app.command("evidence-check")
def sim_evidence_check(
    site: SitesOpt = None,
    payer: Annotated[str, typer.Option(help="The site holding the settlement claims.")]
    = "payer",
    rules: Annotated[Path | None, typer.Option(
        help="Evidence rule file (YAML/JSON, docs/payer.md); default: the shipped sample.")]
    = None,
    purpose: Annotated[str, typer.Option(help="Purpose the sites' policies must allow.")]
    = "research",
    min_cell_size: MinCellOpt = 10,
    json_out: JsonOpt = False,
) -> None:
    """The payer's severity codes checked against the hospitals' records, in this process."""
    from healthspace.client.studyfile import read_document

    spec = read_document(rules, "evidence_rules") if rules is not None else None
    result = run_sim("evidence_check", {"payer": payer, "evidence_rules": spec}, table=None,
                     site=site, min_cell_size=min_cell_size, purpose=purpose, quiet=json_out)
    if json_out:
        emit_json(result)
        return
    out.print(evidence_table(result))


@payer_app.command("findings")
def findings(
    store: StoreOpt,
    study: Annotated[int | None, typer.Option(help="Only this study's findings.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind, e.g. evidence_check.")]
    = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Write the findings to this CSV (stays on this node).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-claim findings this node kept from its studies (e.g. evidence answers)."""
    from healthspace.cdm.store import state_path
    from healthspace.node.state import NodeState

    path = state_path(store)
    if not path.exists():
        raise InvalidInput(f"no node state beside {store} (healthspace node init)",
                           field="store")
    rows = NodeState.open(path).findings(study, kind)
    if out_file is not None:
        columns = sorted({key for row in rows for key in row})
        with open(out_file, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
        err.print(f"{len(rows)} findings written to {out_file}")
    if json_out:
        emit_json({"findings": rows})
        return
    if out_file is None:
        table = Table("study", "kind", "visit", "hospital", "admitted", "code", "finding",
                      title=f"{len(rows)} findings kept on this node")
        for row in rows[:200]:
            table.add_row(str(row["study_id"]), row["kind"], str(row.get("visit_id", "")),
                          str(row.get("hospital", "")), str(row.get("admitted", "")),
                          str(row.get("code", "")), str(row.get("finding", "")))
        out.print(table)
        if len(rows) > 200:
            err.print(f"{len(rows) - 200} more: use --out or --json")
