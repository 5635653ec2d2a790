"""``healthspace demo --scenario payer``: the bureau's analytics and checks, summarised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from healthspace.cli.output import emit_json, err, out, progress_bar
from healthspace.core.enums import ExitCode

TARGET_RECALL, TARGET_PRECISION = 0.9, 0.8


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _top(result: dict[str, Any], n: int = 10) -> dict[str, Any]:
    shown = [g for g in result["groups"] if not g.get("suppressed")]
    shown.sort(key=lambda g: -(g.get("cases") or 0))
    return {**result, "groups": shown[:n]}


def weights_table(result: dict[str, Any]) -> Table:
    rules = result["rules"]
    table = Table("DRG", "cases", "kept", "mean charge", "median", "CV", "mean LOS", "weight",
                  title=f"federated DRG weights ({rules['name']} {rules['version']}"
                        f"{'' if rules['official'] else ', SAMPLE rules'}; trim "
                        f"{result['trim']}): the 10 largest groups")
    for g in result["groups"]:
        table.add_row(g["drg"], str(g["cases"]), str(g["trimmed_cases"]),
                      _fmt(g["mean_charge"], 0), _fmt(g["median_charge"], 0),
                      _fmt(g["cv_charge"], 2), _fmt(g["mean_los"], 1),
                      _fmt(g["relative_weight"]))
    return table


def positions_table(delivered: dict[str, Any]) -> Table:
    table = Table("hospital", "cases", "CMI", "cost index", "LOS index",
                  title="each hospital against the network (delivered to it and the bureau "
                        "only)")
    for name, p in sorted(delivered.items()):
        table.add_row(name, str(p["weighted_cases"]), _fmt(p.get("cmi")),
                      _fmt(p.get("cost_index")), _fmt(p.get("los_index")))
    return table


def screen_tables(result: dict[str, Any]) -> list[Table]:
    k = result["k"]

    def cell(value: int | None) -> str:
        return f"<{k}" if value is None else str(value)

    flags = Table("hospital", "claims", "split admissions", "duplicate bills", "LOS outliers",
                  title=f"fraud screen on the payer node: {result['claims']:,} inpatient claims")
    for row in result["hospitals"]:
        flags.add_row(row["hospital"], str(row["claims"]), cell(row["split_admission"]),
                      cell(row["duplicate_billing"]), cell(row["outlier_los"]))
    ranked = Table("rank", "hospital", "CC/MCC observed", "expected", "ratio", "95% CI",
                   title="upcoding signal (standardised CC/MCC ratio)")
    for row in result["upcoding"]:
        ci = row["ci"] or [None, None]
        ranked.add_row(str(row["rank"]), row["hospital"], str(row["observed"]),
                       _fmt(row["expected"], 1), _fmt(row["ratio"], 2),
                       f"{_fmt(ci[0], 2)}–{_fmt(ci[1], 2)}")
    return [flags, ranked]


def detection_table(detection: dict[str, Any]) -> Table:
    table = Table("pattern", "precision", "recall", "TP", "FP", "FN", "target",
                  title="findings kept on the payer node vs the injected truth")
    for pattern in ("split_admission_screen_only", "split_admission", "duplicate_billing",
                    "unsupported_severity"):
        s = detection[pattern]
        met = (s["precision"] or 0) >= TARGET_PRECISION and (s["recall"] or 0) >= TARGET_RECALL
        table.add_row(pattern, _fmt(s["precision"]), _fmt(s["recall"]),
                      str(s["true_positives"]), str(s["false_positives"]),
                      str(s["false_negatives"]),
                      "met" if met else ("–" if pattern.endswith("screen_only") else "MISSED"))
    return table


def claims_table(claims: dict[str, Any]) -> Table:
    table = Table("expected", "match", "amount_mismatch", "no_match",
                  title=f"insurer claim check: {claims['checked']} claims "
                        f"({claims['period'][0]} to {claims['period'][1]}), answers vs truth")
    for expected in ("match", "amount_mismatch", "no_match"):
        got = claims["by_expected"].get(expected, {})
        table.add_row(expected, *(str(got.get(o, 0)) for o in ("match", "amount_mismatch",
                                                                "no_match")))
    return table


def run(persons: int, workdir: Path | None, json_out: bool, seed: int) -> None:
    from healthspace.cli.claims import evidence_table
    from healthspace.cli.payer import casemix_table
    from healthspace.demo_payer import run_payer_demo

    def say(msg: str) -> None:
        err.print(f"[cyan]demo[/] {msg}", highlight=False)

    with progress_bar(not json_out) as progress:
        result = run_payer_demo(persons=persons, workdir=workdir, seed=seed, say=say,
                                progress=progress)
    if json_out:
        emit_json(result.to_json())
    else:
        views = result.studies
        if views["casemix"].result:
            out.print(casemix_table(_top(views["casemix"].result)))
        weights = views["drg_weights"]
        if weights.result:
            out.print(weights_table(_top(weights.result)))
            out.print(positions_table(weights.delivered or {}))
            out.print(f"hospital_1's steward sees positions of: "
                      f"{', '.join(sorted(result.delivered_to_hospital)) or 'none'}")
        if views["fraud_screen"].result:
            for table in screen_tables(views["fraud_screen"].result):
                out.print(table)
        if views["evidence_check"].result:
            out.print(evidence_table(views["evidence_check"].result))
        out.print(detection_table(result.detection))
        top = result.detection["upcoding"]
        out.print(f"upcoding: injected at {', '.join(top['injected'])}; ranked "
                  f"{', '.join(top['ranking'])} — top ranked are injected: "
                  f"{top['top_ranked_are_injected']}")
        out.print(claims_table(result.claims))
        mark = "[green]all as expected[/]" if result.claims["agree"] else "[red]DIFFERENT[/]"
        out.print(f"insurer outcomes vs truth: {mark}")
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
        out.print(f"timings: {timings}", highlight=False)
    if not result.ok:
        err.print("[bold red]a study did not complete or a claim outcome differs[/]")
    raise typer.Exit(int(ExitCode.OK if result.ok else ExitCode.ERROR))
