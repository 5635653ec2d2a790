"""Ingest formats that are converted to CDM CSV first: FHIR R4 and mapped hospital exports."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from healthspace.cdm.deid import DeidConfig
from healthspace.cdm.ingest import (
    DEFAULT_DEID,
    IngestReport,
    Progress,
    _swapped_in,
    load_into,
)


def _ingest_converted(
    store: Path,
    src_dir: Path,
    convert: Callable[[Path], Any],
    *,
    prefix: str,
    progress: Progress | None,
    deid: DeidConfig | None,
    keep_identity: Callable[[Path], Any] | None = None,
) -> tuple[IngestReport, dict[str, Any]]:
    """``convert(folder)`` writes CDM CSV into a temporary folder beside the store, which is
    then ingested like any OMOP export (atomic). ``keep_identity`` receives the folder's
    national-id file before the folder goes (the node loads it into its identity vault)."""
    import tempfile

    started = time.perf_counter()
    store = Path(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=store.parent) as tmp:
        stats = convert(Path(tmp))
        with _swapped_in(store) as con:
            report = load_into(con, Path(tmp), progress=progress, store=str(store), deid=deid)
        if report.identity_file and keep_identity is not None:
            keep_identity(Path(report.identity_file))
    report.source = str(Path(src_dir).resolve())
    report.identity_file = None  # the temporary copy is gone; its rows are in the vault
    report.skipped_files = []  # the converter's own working files
    report.seconds = round(time.perf_counter() - started, 3)
    return report, asdict(stats)


def ingest_fhir(
    store: Path,
    src_dir: Path,
    *,
    network_key: bytes | None = None,
    progress: Progress | None = None,
    keep_identity: Callable[[Path], Any] | None = None,
    deid: DeidConfig | None = DEFAULT_DEID,
) -> tuple[IngestReport, dict[str, Any]]:
    """Ingest FHIR R4 files (``healthspace.cdm.fhir``) through CDM CSV (atomic)."""
    from healthspace.cdm.fhir import convert

    return _ingest_converted(
        store, src_dir,
        lambda out: convert(Path(src_dir), out, network_key=network_key, progress=progress),
        prefix="fhir-", progress=progress, deid=deid, keep_identity=keep_identity)


def ingest_mapped(
    store: Path,
    src_dir: Path,
    mapping: Path,
    *,
    progress: Progress | None = None,
    deid: DeidConfig | None = DEFAULT_DEID,
) -> tuple[IngestReport, dict[str, Any]]:
    """Ingest a hospital's own export through a declarative mapping (``healthspace.cdm.
    mapping``) and CDM CSV (atomic)."""
    from healthspace.cdm.mapped import convert
    from healthspace.cdm.mapping import load_mapping

    loaded = load_mapping(Path(mapping))
    return _ingest_converted(store, src_dir, lambda out: convert(Path(src_dir), loaded, out),
                             prefix="mapped-", progress=progress, deid=deid)
