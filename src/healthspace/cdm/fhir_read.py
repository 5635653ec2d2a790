"""Reading FHIR R4 files: resources from Bundles and NDJSON, references, codings and dates."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from healthspace.core.errors import IngestError


def stable_id(kind: str, key: str) -> int:
    """A positive 62-bit id from a resource type and id: the same everywhere, every time."""
    return int.from_bytes(hashlib.sha256(f"{kind}/{key}".encode()).digest()[:8], "big") >> 2


SYSTEMS = {
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10",
    "http://hl7.org/fhir/sid/icd-10-gm": "ICD10",
    "http://id.who.int/icd/release/10": "ICD10",
    "http://www.whocc.no/atc": "ATC",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://www.ama-assn.org/go/cpt": "CPT4",
    "http://hl7.org/fhir/sid/cvx": "CVX",
}

def fhir_date(value: Any) -> str | None:
    """The calendar date of a FHIR date/dateTime/instant (local date as written)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value[:10]
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        date.fromisoformat(text)
    except ValueError:
        return None
    return text


def fhir_datetime(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) < 19:
        return None
    return value[:19].replace("T", " ")



def coding(concept: Any) -> tuple[str, str, str] | None:
    """The first coding of a CodeableConcept with a code: (vocabulary, code, display)."""
    if not isinstance(concept, dict):
        return None
    text = str(concept.get("text") or "")
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            system = str(coding.get("system") or "urn:unknown")
            return (SYSTEMS.get(system, system), str(coding["code"]),
                    str(coding.get("display") or text))
    return None


class Refs:
    """Resolves references within one file: ``urn:uuid:…`` full URLs and ``Type/id``."""

    def __init__(self) -> None:
        self.full_urls: dict[str, tuple[str, str]] = {}

    def key(self, reference: Any, kind: str) -> str | None:
        if isinstance(reference, dict):
            reference = reference.get("reference")
        if not isinstance(reference, str) or "?" in reference:  # conditional: not resolvable
            return None
        if reference in self.full_urls:
            found_kind, rid = self.full_urls[reference]
            return rid if found_kind == kind else None
        if reference.startswith("urn:uuid:"):
            return reference.removeprefix("urn:uuid:")
        parts = reference.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == kind:
            return parts[-1]
        return None

    def id(self, reference: Any, kind: str) -> int | None:
        key = self.key(reference, kind)
        return stable_id(kind, key) if key is not None else None


def resources(path: Path) -> Iterator[tuple[dict[str, Any], str | None]]:
    """(resource, fullUrl) of every resource in one file."""
    try:
        if path.suffix.lower() == ".ndjson":
            with open(path, encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            yield json.loads(line), None
                        except json.JSONDecodeError as exc:
                            raise IngestError(f"invalid JSON: {exc.msg}", file=path.name,
                                              row=number) from exc
            return
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise IngestError(f"invalid JSON at line {exc.lineno}: {exc.msg}",
                          file=path.name) from exc
    if not isinstance(doc, dict) or "resourceType" not in doc:
        raise IngestError("not a FHIR resource (no resourceType)", file=path.name)
    if doc["resourceType"] == "Bundle":
        for entry in doc.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"], entry.get("fullUrl")
    else:
        yield doc, None



def source_files(src: Path) -> list[Path]:
    if not src.is_dir():
        raise IngestError(f"source directory {src} does not exist or is not a directory")
    files = sorted(p for p in src.rglob("*") if p.is_file()
                   and p.suffix.lower() in (".json", ".ndjson"))
    if not files:
        raise IngestError(f"no FHIR files (*.json bundles or *.ndjson) in {src}")
    return files
