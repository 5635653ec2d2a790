"""The manifest every backup carries: what was saved, when, file sizes and SHA-256, ledger head.

A restore reads the manifest first and refuses a backup whose files are missing, of another
size or of another digest (truncated, corrupted or edited), before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import healthspace
from healthspace.core.clock import iso
from healthspace.core.errors import InvalidInput

FORMAT = "healthspace-backup/1"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LedgerHead:
    """Size and head of an audit ledger as saved; a restored copy must show the same."""

    entries: int
    head_hash: str | None
    checkpoints: int

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LedgerHead:
        return cls(int(doc["entries"]), doc.get("head_hash"), int(doc["checkpoints"]))


@dataclass
class Manifest:
    kind: str  # "hub" or "node"
    backend: str  # hub: "sqlite" | "postgresql"; node: "sqlite+duckdb"
    ledger: LedgerHead
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> bytes, sha256
    details: dict[str, Any] = field(default_factory=dict)  # schema revision, counts, node name
    created_at: str = field(default_factory=lambda: iso(datetime.now(UTC)))
    version: str = healthspace.__version__
    format: str = FORMAT

    def add_file(self, path: Path) -> None:
        self.files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        """Written last and atomically: a backup without its manifest is incomplete."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)

    @classmethod
    def read(cls, path: Path, kind: str) -> Manifest:
        if not path.is_file():
            raise InvalidInput(f"no backup manifest at {path} (an incomplete backup?)",
                               field="from")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls(kind=doc["kind"], backend=doc["backend"],
                           ledger=LedgerHead.from_dict(doc["ledger"]), files=dict(doc["files"]),
                           details=dict(doc.get("details") or {}), created_at=doc["created_at"],
                           version=doc.get("version", ""), format=doc["format"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"backup manifest {path} is unreadable: {exc}",
                               field="from") from exc
        if manifest.format != FORMAT:
            raise InvalidInput(f"{path}: unknown backup format {manifest.format!r}", field="from")
        if manifest.kind != kind:
            raise InvalidInput(f"{path} is a {manifest.kind} backup, not a {kind} backup",
                               field="from")
        return manifest

    def check_files(self, folder: Path) -> None:
        """Every listed file present with its recorded size and SHA-256, else InvalidInput."""
        if not self.files:
            raise InvalidInput("the backup manifest lists no files", field="from")
        for name, expected in self.files.items():
            path = folder / name
            if Path(name).name != name or not path.is_file():
                raise InvalidInput(f"backup file {path} is missing", field="from")
            size = path.stat().st_size
            if size != int(expected["bytes"]):
                raise InvalidInput(
                    f"backup file {path} is {size:,} bytes, the manifest says "
                    f"{int(expected['bytes']):,}: truncated or replaced", field="from")
            if sha256_file(path) != expected["sha256"]:
                raise InvalidInput(
                    f"backup file {path} does not match its SHA-256 in the manifest: "
                    "corrupted or edited", field="from")

    def check_ledger(self, found: LedgerHead, where: str) -> None:
        """The restored ledger has the size and head the backup recorded."""
        if found != self.ledger:
            raise InvalidInput(
                f"the ledger restored into {where} ({found.entries} entries, head "
                f"{found.head_hash}) is not the one backed up ({self.ledger.entries} entries, "
                f"head {self.ledger.head_hash})", field="from")
