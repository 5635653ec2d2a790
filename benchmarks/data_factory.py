"""Benchmark: the data factory — FHIR, mapped-CSV and OMOP ingest, and the quality report.

One synthetic hospital (``--persons``) is written as OMOP CSV, as a HIS export and as an EMR
export; each is ingested into a store (de-identified, as a node does), and the rows per second
compared with the plain OMOP ingest of the same data (the baseline: the mapped imports do the
same validation plus the mapping). The Synthea FHIR sample (15 patients) is imported
``--fhir-repeats`` times as a folder of copies, to measure resources per second. Finally the
data-quality report runs over the OMOP store.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from healthspace.cdm.ingest import ingest_dir
from healthspace.cdm.ingest_formats import ingest_fhir, ingest_mapped
from healthspace.cdm.quality import assess
from healthspace.cdm.synth import generate
from healthspace.cdm.synth_his import write_emr_export, write_his_export

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea_fhir"


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--fhir-repeats", type=int, default=20,
                        help="copies of the Synthea sample to import at once")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-factory-"))
    site = root / "data" / "hospital_1"
    if not (site / "person.csv").exists():
        generate(root / "data", sites=1, persons=args.persons, seed=5)
    write_his_export(site, root / "his")
    write_emr_export(site, root / "emr")
    examples = resources.files("healthspace.examples")
    omop, t_omop = timed(ingest_dir, root / "omop.duckdb", site)
    (his, _), t_his = timed(ingest_mapped, root / "his.duckdb", root / "his",
                            Path(str(examples.joinpath("his_mapping.yaml"))))
    (emr, _), t_emr = timed(ingest_mapped, root / "emr.duckdb", root / "emr",
                            Path(str(examples.joinpath("emr_mapping.yaml"))))
    rows = sum(omop.tables.values())
    results = {"rows": rows, "omop_s": t_omop, "his_s": t_his, "emr_s": t_emr}
    if SYNTHEA.exists():
        fhir_src = root / "fhir"
        if not fhir_src.exists():
            for i in range(args.fhir_repeats):  # each copy its own patients (new ids)
                target = fhir_src / f"copy_{i:03d}"
                target.mkdir(parents=True)
                for path in SYNTHEA.glob("*.json"):
                    text = path.read_text(encoding="utf-8")
                    text = text.replace("urn:uuid:", f"urn:uuid:c{i}-").replace(
                        '"id": "', f'"id": "c{i}-')
                    (target / path.name).write_text(text, encoding="utf-8")
        (report, stats), t_fhir = timed(ingest_fhir, root / "fhir.duckdb", fhir_src)
        results.update(fhir_s=t_fhir, fhir_files=stats["files"],
                       fhir_resources=sum(stats["resources"].values()))
    con = duckdb.connect(str(root / "omop.duckdb"), read_only=True)
    quality, t_quality = timed(assess, con)
    con.close()
    results.update(quality_s=t_quality, quality_checks=len(quality.checks))
    table = Table(title=f"data factory ({args.persons:,} persons, {rows:,} CDM rows)")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("throughput", justify="right")
    table.add_column("vs OMOP ingest", justify="right")
    table.add_row("OMOP CSV ingest", f"{t_omop:.1f}", f"{rows / t_omop:,.0f} rows/s", "1.00")
    for name, seconds, rep in (("HIS export (mapped)", t_his, his),
                               ("EMR export (mapped)", t_emr, emr)):
        n = sum(rep.tables.values())
        table.add_row(name, f"{seconds:.1f}", f"{n / seconds:,.0f} rows/s",
                      f"{seconds / t_omop:.2f}")
    if "fhir_s" in results:
        table.add_row(f"FHIR ({results['fhir_files']} files)", f"{results['fhir_s']:.1f}",
                      f"{results['fhir_resources'] / results['fhir_s']:,.0f} resources/s", "")
    table.add_row(f"quality report ({len(quality.checks)} checks)", f"{t_quality:.1f}", "", "")
    Console().print(table)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
