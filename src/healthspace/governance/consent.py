"""Patient consent: tiers, optional purpose lists that narrow them, and the consent CSV format."""

from __future__ import annotations

import csv
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from healthspace.core.errors import IngestError
from healthspace.governance.policy import ConsentTier, Purpose, as_utc

RESEARCH_ONLY_PURPOSES = frozenset({Purpose.RESEARCH, Purpose.PUBLIC_HEALTH})
# The one purpose a research-only patient's list may add: letting their record inform the
# care of patients like them (similar-patient lookups), when they name it explicitly.
OPT_IN_PURPOSES = frozenset({Purpose.CLINICAL_CARE})
_KNOWN = frozenset(str(p) for p in Purpose)
_KNOWN_LIST = ", ".join(str(p) for p in Purpose)
ID_COLUMNS = ("person_source_value", "person_id")
CSV_COLUMNS = (*ID_COLUMNS, "tier", "purposes", "updated_at")


def permits(tier: ConsentTier, purposes: Collection[str] | None, purpose: str) -> bool:
    """Whether consent at ``tier``, narrowed by ``purposes`` (None = no list), allows ``purpose``.

    An unknown purpose is never permitted: consent cannot cover what it does not name. A list
    narrows its tier, with one exception: a research-only list naming ``clinical_care``
    (:data:`OPT_IN_PURPOSES`) permits it.
    """
    if purpose not in _KNOWN:
        return False
    tier = ConsentTier(tier)
    if tier == ConsentTier.WITHHELD:
        return False
    if tier == ConsentTier.RESEARCH_ONLY and purpose not in RESEARCH_ONLY_PURPOSES:
        return (purpose in OPT_IN_PURPOSES and purposes is not None
                and purpose in {str(p) for p in purposes})
    return purposes is None or purpose in {str(p) for p in purposes}


class ConsentRecord(BaseModel):
    """One person's consent at one site, keyed by pseudonym or by the site's person_id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_source_value: str | None = Field(default=None, min_length=1)
    person_id: int | None = None
    tier: ConsentTier
    purposes: list[Purpose] | None = None
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ConsentRecord:
        if (self.person_source_value is None) == (self.person_id is None):
            raise ValueError("give exactly one of person_source_value and person_id")
        return self

    def permits(self, purpose: str) -> bool:
        return permits(self.tier, self.purposes, purpose)


def record_permits(record: ConsentRecord | None, default_tier: ConsentTier, purpose: str) -> bool:
    """Consent check for one person; no record means the policy's ``consent_default_tier``."""
    if record is None:
        return permits(default_tier, None, purpose)
    return record.permits(purpose)


def parse_purposes(text: str | None) -> list[Purpose] | None:
    """Parse ``research;public_health``: blanks ignored, no purposes -> None (no narrowing)."""
    if text is None:
        return None
    out: list[Purpose] = []
    for part in text.split(";"):
        name = part.strip().lower()
        if not name:
            continue
        if name not in _KNOWN:
            raise ValueError(f"unknown purpose {part.strip()!r} (known: {_KNOWN_LIST})")
        if Purpose(name) not in out:
            out.append(Purpose(name))
    return out or None


def read_consent_csv(path: Path) -> list[ConsentRecord]:
    """Read a consent CSV; every error names the file and, where it can, the row and column.

    Rows are numbered from 1 for the first data row (the header is not counted).
    """
    file = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return _read(csv.DictReader(fh), file)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise IngestError(f"cannot read the consent file: {reason}", file=file) from exc
    except UnicodeDecodeError as exc:
        raise IngestError("the consent file is not UTF-8 text", file=file) from exc


def _read(reader: csv.DictReader[str], file: str) -> list[ConsentRecord]:
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise IngestError(f"cannot parse the header row: {exc}", file=file) from exc
    if not header:
        raise IngestError("file is empty: no header row", file=file)
    cols = _columns(header, file)
    key = next(c for c in ID_COLUMNS if c in cols)
    records: list[ConsentRecord] = []
    first_row: dict[object, int] = {}
    row = 0
    try:
        for row, rec in enumerate(reader, start=1):
            record = _record(rec, cols, key, file, row)
            person = getattr(record, key)
            if person in first_row:
                raise IngestError(f"duplicate person {person!r} (first on row {first_row[person]})",
                                  file=file, row=row, column=key)
            first_row[person] = row
            records.append(record)
    except csv.Error as exc:
        raise IngestError(f"cannot parse CSV: {exc}", file=file, row=row + 1) from exc
    return records


def _columns(header: Sequence[str], file: str) -> dict[str, str]:
    """Map canonical lower-case column names to the header's spelling; reject unknown columns."""
    cols: dict[str, str] = {}
    for name in header:
        canon = (name or "").strip().lower()
        if canon not in CSV_COLUMNS:
            # Strict on purpose: a misspelt 'purposes' column would silently widen consent.
            raise IngestError(f"unknown column {name!r} (expected {', '.join(CSV_COLUMNS)})",
                              file=file, column=name)
        if canon in cols:
            raise IngestError("column appears twice", file=file, column=name)
        cols[canon] = name
    ids = [c for c in ID_COLUMNS if c in cols]
    if len(ids) != 1:
        raise IngestError("need exactly one of the columns person_source_value and person_id",
                          file=file, column=" / ".join(ids) or None)
    if "tier" not in cols:
        raise IngestError("missing column", file=file, column="tier")
    return cols


def _record(
    rec: dict[str | None, str | list[str] | None], cols: dict[str, str], key: str, file: str,
    row: int,
) -> ConsentRecord:
    if rec.get(None):
        raise IngestError("more values than header columns", file=file, row=row)

    def cell(name: str) -> str:
        value = rec.get(cols[name]) if name in cols else None
        return value.strip() if isinstance(value, str) else ""

    def fail(column: str, message: str) -> IngestError:
        return IngestError(message, file=file, row=row, column=column)

    fields: dict[str, object] = {}
    raw_key = cell(key)
    if not raw_key:
        raise fail(key, "empty value")
    if key == "person_id":
        try:
            fields["person_id"] = int(raw_key)
        except ValueError:
            raise fail(key, f"not an integer: {raw_key!r}") from None
    else:
        fields["person_source_value"] = raw_key
    tier = cell("tier").lower()
    if tier not in {str(t) for t in ConsentTier}:
        known = ", ".join(str(t) for t in ConsentTier)
        raise fail("tier", f"unknown tier {cell('tier')!r} (known: {known})")
    fields["tier"] = ConsentTier(tier)
    try:
        fields["purposes"] = parse_purposes(cell("purposes"))
    except ValueError as exc:
        raise fail("purposes", str(exc)) from None
    if cell("updated_at"):
        try:
            fields["updated_at"] = as_utc(datetime.fromisoformat(cell("updated_at")))
        except ValueError:
            raise fail("updated_at", f"not an ISO date-time: {cell('updated_at')!r}") from None
    try:
        return ConsentRecord.model_validate(fields)
    except ValidationError as exc:  # not expected after the checks above; still name the row
        raise IngestError(str(exc.errors()[0]["msg"]), file=file, row=row) from exc
