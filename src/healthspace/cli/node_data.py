"""``healthspace node ingest|quality|kanon``: build a store, judge its quality, check k-anonymity.

Ingest de-identifies by default (``healthspace.cdm.deid``); FHIR R4 exports are converted on
the way (``healthspace.cdm.fhir``).
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from healthspace.cli.common import JsonOpt, StoreOpt, split_list
from healthspace.cli.output import emit_json, err, out, progress_bar
from healthspace.core.enums import ExitCode
from healthspace.core.errors import InvalidInput

KEY_ENV = "HEALTHSPACE_NETWORK_KEY_FILE"


def _network_key(path: Path | None) -> bytes | None:
    path = path or (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else None)
    if path is None:
        return None
    if not path.is_file():
        raise InvalidInput(f"network key file {path} does not exist", field="network_key_file")
    key = path.read_bytes().strip()
    if len(key) < 16:
        raise InvalidInput("the network key must be at least 16 bytes", field="network_key_file")
    return key


def _merge_identities(files: list[Path], target: Path) -> Path | None:
    """One ``person_id,national_id`` file from several (the export's and de-identification's)."""
    rows: dict[str, str] = {}
    for path in files:
        if path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    rows[row["person_id"]] = row["national_id"]
    if not rows:
        return None
    with open(target, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["person_id", "national_id"])
        writer.writerows(rows.items())
    return target


def ingest(
    directory: Annotated[Path, typer.Argument(help="Folder of OMOP CDM CSV files or FHIR files "
                                                   "(or, with --format table, one CSV file).")],
    store: StoreOpt,
    fmt: Annotated[str, typer.Option("--format", help="omop-csv (a CDM folder), fhir (FHIR R4 "
                                                      "Bundles / NDJSON), mapped-csv (a "
                                                      "hospital export, with --mapping) or "
                                                      "table (one CSV as analysis_data).")]
    = "omop-csv",
    mapping: Annotated[Path | None, typer.Option(
        help="mapped-csv: the mapping file (docs/mapping.md).")] = None,
    network_key_file: Annotated[Path | None, typer.Option(
        help="The network key: national ids become the network pseudonym "
             f"(person_source_value). Else ${KEY_ENV}.")] = None,
    deid: Annotated[bool, typer.Option(
        "--deid/--no-deid", help="De-identify: drop address lines and free text, pseudonymise "
                                 "national ids (docs/deidentification.md).")] = True,
    date_shift_days: Annotated[int, typer.Option(
        help="Shift each person's dates by a random, per-person number of days in [-N, N] "
             "(0: off).")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Load OMOP CSV or FHIR R4 files into the store (atomic: a failure keeps the old store)."""
    from healthspace.cdm.deid import DeidConfig
    from healthspace.cdm.ingest import ingest_dir, ingest_table
    from healthspace.cdm.ingest_formats import ingest_fhir, ingest_mapped
    from healthspace.cdm.store import state_path
    from healthspace.node.state import NodeState

    if fmt == "table":
        loaded = ingest_table(store, directory)
        if json_out:
            emit_json(loaded)
        else:
            out.print(f"analysis_data: {loaded['rows']:,} rows, columns "
                      f"{', '.join(loaded['columns'])} → {store}", highlight=False)
        return
    if fmt not in ("omop-csv", "fhir", "mapped-csv"):
        raise InvalidInput(f"unsupported format {fmt!r}; supported: omop-csv, fhir, mapped-csv, "
                           "table", field="format")
    if (fmt == "mapped-csv") != (mapping is not None):
        raise InvalidInput("--mapping goes with --format mapped-csv (and it needs one)",
                           field="mapping")
    if not 0 <= date_shift_days <= 3650:
        raise InvalidInput("the date shift is 0 to 3650 days", field="date_shift_days")
    key = _network_key(network_key_file)
    state = NodeState.init(state_path(store))
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
        vault = Path(tmp) / "deid-identity.csv"
        config = DeidConfig(network_key=key, date_shift_days=date_shift_days,
                            shift_secret=state.derive_secret("deid/date-shift"),
                            vault_file=vault) if deid else None
        exported: list[Path] = []

        def keep(identity: Path) -> None:  # the converted folder goes when ingest ends
            copy = Path(tmp) / "fhir-identity.csv"
            copy.write_bytes(identity.read_bytes())
            exported.append(copy)

        with progress_bar(not json_out) as progress:
            if fmt == "fhir":
                report, stats = ingest_fhir(store, directory, network_key=key,
                                            progress=progress, deid=config, keep_identity=keep)
            elif mapping is not None:
                report, stats = ingest_mapped(store, directory, mapping, progress=progress,
                                              deid=config)
            else:
                report, stats = ingest_dir(store, directory, progress=progress,
                                           deid=config), None
                if report.identity_file:
                    exported.append(Path(report.identity_file))
        doc: dict[str, Any] = report.to_dict()
        if stats is not None:
            doc["fhir" if fmt == "fhir" else "mapped"] = stats
        merged = _merge_identities([*exported, vault], Path(tmp) / "identity.csv")
        if merged is not None:
            doc["identity_vault_rows"] = state.load_identity(merged)
    if json_out:
        emit_json(doc)
        return
    _print_report(store, doc)


def _print_report(store: Path, doc: dict[str, Any]) -> None:
    table = Table("table", "rows", "orphans", title=f"ingested into {store}")
    orphans = doc.get("orphans", {})
    for name, rows in doc.get("tables", {}).items():
        table.add_row(name, f"{rows:,}", str(orphans.get(name, "")))
    out.print(table)
    if doc.get("skipped_files"):
        out.print(f"skipped (outside the CDM subset): {', '.join(doc['skipped_files'])}")
    if skipped := (doc.get("fhir") or {}).get("skipped"):
        out.print("not mapped: " + ", ".join(f"{n} {why}" for why, n in skipped.items()),
                  highlight=False)
    if deid := doc.get("deid"):
        cleared = ", ".join(f"{k} {v:,}" for k, v in deid["cleared"].items()) or "nothing"
        out.print(f"de-identified: cleared {cleared}; {deid['pseudonymised']:,} national ids "
                  f"pseudonymised; dates shifted ±{deid['date_shift_days']} days"
                  if deid["date_shift_days"] else
                  f"de-identified: cleared {cleared}; {deid['pseudonymised']:,} national ids "
                  "pseudonymised", highlight=False)
    if "identity_vault_rows" in doc:
        out.print(f"identity vault: {doc['identity_vault_rows']:,} persons")


def quality(
    store: StoreOpt,
    html_file: Annotated[Path | None, typer.Option("--html", help="Also write the report as a "
                                                                  "self-contained HTML page.")]
    = None,
    json_out: JsonOpt = False,
) -> None:
    """Data-quality report of the store: conformance, completeness, plausibility checks.

    Exits 4 when a check fails. The node publishes only the summary (scores and rates) in its
    catalogue."""
    from healthspace.cdm.quality import assess, to_html
    from healthspace.cdm.store import open_store

    con = open_store(store, read_only=True)
    try:
        report = assess(con)
    finally:
        con.close()
    if html_file is not None:
        html_file.write_text(to_html(report, f"Data quality of {store.name}"), encoding="utf-8")
        err.print(f"wrote {html_file}", highlight=False)
    if json_out:
        emit_json(report.to_dict())
    else:
        table = Table("category", "violations", "rate", "threshold", "status",
                      title=f"data quality of {store}")
        table.add_column("check", no_wrap=True)
        for c in report.checks:
            colour = {"pass": "green", "fail": "bold red"}.get(c.status, "dim")
            rate = "" if c.rate is None else f"{100 * c.rate:.2f} %"
            table.add_row(c.category, f"{c.violations:,} / {c.denominator:,}", rate,
                          f"{100 * c.threshold:g} %", f"[{colour}]{c.status}[/]", c.id)
        out.print(table)
        s = report.summary
        out.print(f"{s['passed']} passed, {s['failed']} failed, {s['not_applicable']} not "
                  f"applicable; score {s['score']}", highlight=False)
    if report.summary["failed"]:
        raise typer.Exit(int(ExitCode.PARTIAL))


def kanon(
    store: StoreOpt,
    quasi: Annotated[str, typer.Option(
        help="Comma-separated quasi-identifiers: year_of_birth, gender, region, age_band.")]
    = "year_of_birth,gender,region",
    k: Annotated[int, typer.Option(help="The smallest class size allowed.")] = 5,
    json_out: JsonOpt = False,
) -> None:
    """Check k-anonymity of the store's persons over quasi-identifiers before an extract
    leaves the node; exits 4 when some class is smaller than k."""
    from healthspace.cdm.deid import k_anonymity
    from healthspace.cdm.store import open_store

    if k < 2:
        raise InvalidInput("k must be at least 2", field="k")
    con = open_store(store, read_only=True)
    try:
        found = k_anonymity(con, split_list(quasi), k)
    finally:
        con.close()
    if json_out:
        emit_json(found)
    else:
        verdict = "[green]k-anonymous[/]" if found["k_anonymous"] else "[bold red]not " \
            "k-anonymous[/]"
        out.print(f"{verdict} at k={k} over {', '.join(found['quasi_identifiers'])}: "
                  f"{found['classes']:,} classes of {found['persons']:,} persons; "
                  f"{found['classes_below_k']:,} classes ({found['persons_below_k']:,} "
                  f"persons) below k; smallest class {found['smallest_class']}")
    if not found["k_anonymous"]:
        raise typer.Exit(int(ExitCode.PARTIAL))


def score(
    store: StoreOpt,
    model: Annotated[int, typer.Option("--model", help="The registered model's id.")],
    cohort: Annotated[Path, typer.Option(help="Whom to score: a cohort file (JSON/YAML).")],
    dataset: Annotated[Path | None, typer.Option(
        help="Analysis-dataset spec; default: the model's own.")] = None,
    model_file: Annotated[Path | None, typer.Option(
        help="A downloaded model package (JSON) instead of fetching it from the hub.")] = None,
    purpose: Annotated[str, typer.Option(help="Purpose for the patients' consent.")]
    = "clinical_care",
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Also export person_id,score as CSV (stays at the hospital).")] = None,
    hub: Annotated[str | None, typer.Option(help="Hub URL (else HEALTHSPACE_HUB).")] = None,
    token: Annotated[str | None, typer.Option(help="The node's token.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Score this node's own patients with a registered model; the risk scores go into the
    node's local ``model_scores`` table, nothing leaves the node."""
    import json

    from healthspace.cdm.store import state_path
    from healthspace.cli.common import client
    from healthspace.client.studyfile import read_document
    from healthspace.node.scoring import score_locally
    from healthspace.node.state import NodeState

    state = NodeState.open(state_path(store))
    if model_file is not None:
        if not model_file.is_file():
            raise InvalidInput(f"model file {model_file} does not exist", field="model-file")
        package = json.loads(model_file.read_text())
        if int(package.get("id", 0)) != model:
            raise InvalidInput(f"{model_file} holds model {package.get('id')}, not {model}",
                               field="model-file")
    else:
        with client(hub, token) as c:
            package = c.model_weights(model).model_dump(mode="json")
    spec = read_document(dataset, "dataset") if dataset is not None else package.get("dataset")
    if spec is None:
        raise InvalidInput("the model carries no analysis dataset; give --dataset",
                           field="dataset")
    report = score_locally(store, state, package, cohort=read_document(cohort, "cohort"),
                           dataset=spec, purpose=purpose)
    if out_file is not None:
        with out_file.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["person_id", "score", "scored_at"])
            writer.writerows(state.scores(model))
    if json_out:
        emit_json({"model_id": report.model_id, "scored": report.scored,
                   "histogram": report.histogram, "table": "model_scores"})
        return
    view = Table("score", "persons", title=f"model {model}: {report.scored} persons scored "
                                           "(in model_scores)")
    for row in report.histogram:
        lo, hi = row["bin"]
        view.add_row(f"{lo:.1f}–{hi:.1f}", "<k" if row["n"] is None else str(row["n"]))
    out.print(view)
