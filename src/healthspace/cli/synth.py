"""``healthspace synth``: write synthetic hospitals (and a payer) as OMOP CSV folders."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from healthspace.cli.output import emit_json, err, out, progress_bar
from healthspace.core.errors import InvalidInput

if TYPE_CHECKING:
    from healthspace.cdm.synth_fraud import FraudSpec

_FRAUD_OPTIONS = {"rate": "fraud_rate", "hospitals": "fraud_hospitals",
                  "patterns": "fraud_patterns", "upcode_share": "upcode_share"}


def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")],
    sites: Annotated[int, typer.Option(help="Number of hospitals.")] = 3,
    persons: Annotated[int, typer.Option(help="Persons per hospital.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    payer: Annotated[bool, typer.Option("--payer", help="Add the payer bureau's site.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="omop (CDM CSV folders) or his-export "
                                                      "(also each hospital's HIS and EMR "
                                                      "exports in OUT/his/SITE and "
                                                      "OUT/emr/SITE, for mapped-csv import)")]
    = "omop",
    fraud_rate: Annotated[float | None, typer.Option(
        help="Inject fraud into the payer's claims (needs --payer): share of the tampered "
             "hospitals' inpatient claims given a split admission, and a duplicate; 0 = off."
    )] = None,
    fraud_hospitals: Annotated[str | None, typer.Option(
        help="Comma-separated hospitals whose claims are tampered with (default: the last).")]
    = None,
    fraud_patterns: Annotated[str | None, typer.Option(
        help="Comma-separated: split_admission, duplicate_billing, upcoded (default: all).")]
    = None,
    upcode_share: Annotated[float | None, typer.Option(
        help="Share of the tampered hospitals' claims without a CC/MCC that get one added "
             "(default 0.25).")] = None,
    insurer_claims: Annotated[int, typer.Option(
        help="Write this many commercial-insurer claims to OUT/insurer/claims.csv (needs "
             "--payer).")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Generate synthetic hospitals in OMOP CDM v5.4 CSV, ground truth in OUT/_truth/."""
    from healthspace.cdm.synth import generate
    from healthspace.cdm.synth_his import write_emr_export, write_his_export

    if fmt not in ("omop", "his-export"):
        raise InvalidInput(f"unknown format {fmt!r}; one of omop, his-export", field="format")
    if sites < 1:
        raise InvalidInput("need at least one site", field="sites")
    if persons < 1:
        raise InvalidInput("need at least one person per site", field="persons")
    fraud = _fraud_spec(fraud_rate, fraud_hospitals, fraud_patterns, upcode_share, payer, sites)
    if insurer_claims < 0 or (insurer_claims and not payer):
        raise InvalidInput("--insurer-claims must be a non-negative count and needs --payer",
                           field="insurer_claims")
    with progress_bar(not json_out) as progress:
        try:
            summary = generate(out_dir, sites=sites, persons=persons, seed=seed, payer=payer,
                               fraud=fraud, insurer_claims=insurer_claims, progress=progress)
        except ValueError as exc:  # too few payer visits for the insurer claims asked for
            raise InvalidInput(str(exc), field="insurer_claims") from exc
    rows = summary.rows
    his: dict[str, dict[str, int]] = {}
    emr: dict[str, dict[str, int]] = {}
    if fmt == "his-export":
        for site in (s for s in rows if s != "payer"):
            his[site] = write_his_export(out_dir / site, out_dir / "his" / site)
            emr[site] = write_emr_export(out_dir / site, out_dir / "emr" / site)
    if json_out:
        emit_json({"out": str(out_dir), "sites": list(rows), "rows": rows,
                   **({"his_export": his, "emr_export": emr} if his else {}),
                   **({"fraud": {"counts": summary.fraud,
                                 "truth": str(out_dir / "_truth" / "fraud.csv")}}
                      if summary.fraud is not None else {}),
                   **({"insurer": {"claims": str(out_dir / "insurer" / "claims.csv"),
                                   "expected": summary.insurer}}
                      if summary.insurer is not None else {})})
        return
    tables = sorted({t for per_site in rows.values() for t in per_site})
    table = Table("table", *rows.keys(), title=f"synthetic data in {out_dir}")
    for name in tables:
        table.add_row(name, *(f"{rows[s].get(name, 0):,}" for s in rows))
    out.print(table)
    err.print(f"ground truth in {out_dir / '_truth'}")
    if summary.fraud is not None:
        counts = ", ".join(f"{n:,} {p}" for p, n in summary.fraud.items())
        err.print(f"injected into the payer's claims: {counts} (truth in _truth/fraud.csv)")
    if summary.insurer is not None:
        err.print(f"{sum(summary.insurer.values()):,} insurer claims in "
                  f"{out_dir / 'insurer' / 'claims.csv'} (expected verdicts in "
                  "_truth/insurer_claims.csv)")
    if his:
        err.print(f"HIS exports in {out_dir / 'his'}, EMR exports in {out_dir / 'emr'} (map "
                  "them with healthspace/examples/his_mapping.yaml and emr_mapping.yaml)")


def _fraud_spec(rate: float | None, hospitals: str | None, patterns: str | None,
                share: float | None, payer: bool, sites: int) -> FraudSpec | None:
    """The fraud options as a spec (None when off); errors name the option."""
    from healthspace.cdm.synth_fraud import FraudSpecError

    if not rate:  # not given, or 0
        given = [f"--{name}" for name, value in (("fraud-hospitals", hospitals), (
            "fraud-patterns", patterns), ("upcode-share", share)) if value is not None]
        if given:
            raise InvalidInput(f"fraud injection is off: set --fraud-rate above 0 to use "
                               f"{', '.join(given)}", field="fraud_rate")
        return None
    if not payer:
        raise InvalidInput("--fraud-rate injects fraud into the payer's claims: add --payer",
                           field="fraud_rate")
    try:
        return _build_spec(rate, hospitals, patterns, share, sites)
    except FraudSpecError as exc:
        option = _FRAUD_OPTIONS[exc.field]
        raise InvalidInput(f"--{option.replace('_', '-')}: {exc}", field=option) from exc


def _build_spec(rate: float, hospitals: str | None, patterns: str | None, share: float | None,
                sites: int) -> FraudSpec:
    from healthspace.cdm.synth_fraud import FraudSpec

    def items(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    spec = FraudSpec(rate=rate)
    spec = replace(
        spec, hospitals=spec.hospitals if hospitals is None else items(hospitals),
        patterns=spec.patterns if patterns is None else items(patterns),
        upcode_share=spec.upcode_share if share is None else share,
    )
    return spec.for_network([f"hospital_{k + 1}" for k in range(sites)])
