"""``healthspace synth``: write synthetic hospitals (and a payer) as OMOP CSV folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from healthspace.cli.output import emit_json, err, out, progress_bar
from healthspace.core.errors import InvalidInput


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
    with progress_bar(not json_out) as progress:
        summary = generate(out_dir, sites=sites, persons=persons, seed=seed, payer=payer,
                           progress=progress)
    rows = summary.rows
    his: dict[str, dict[str, int]] = {}
    emr: dict[str, dict[str, int]] = {}
    if fmt == "his-export":
        for site in (s for s in rows if s != "payer"):
            his[site] = write_his_export(out_dir / site, out_dir / "his" / site)
            emr[site] = write_emr_export(out_dir / site, out_dir / "emr" / site)
    if json_out:
        emit_json({"out": str(out_dir), "sites": list(rows), "rows": rows,
                   **({"his_export": his, "emr_export": emr} if his else {})})
        return
    tables = sorted({t for per_site in rows.values() for t in per_site})
    table = Table("table", *rows.keys(), title=f"synthetic data in {out_dir}")
    for name in tables:
        table.add_row(name, *(f"{rows[s].get(name, 0):,}" for s in rows))
    out.print(table)
    err.print(f"ground truth in {out_dir / '_truth'}")
    if his:
        err.print(f"HIS exports in {out_dir / 'his'}, EMR exports in {out_dir / 'emr'} (map "
                  "them with healthspace/examples/his_mapping.yaml and emr_mapping.yaml)")
