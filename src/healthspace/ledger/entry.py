"""Ledger entries: the canonical encodings and the SHA-256 hash that chains them."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from healthspace.core.canonical import canonical_json

GENESIS_HASH = "0" * 64
ENTRY_DOMAIN = b"healthspace-ledger-entry-v1\x00"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line; ``hash`` commits to every other field and, via ``prev_hash``, the past."""

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    payload_digest: str
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def payload_digest(payload: dict[str, Any] | None) -> str:
    """Hex SHA-256 of the canonical JSON of ``payload`` (no payload is digested as ``{}``)."""
    return hashlib.sha256(canonical_json({} if payload is None else payload)).hexdigest()


def _field(value: str) -> bytes:
    data = value.encode("utf-8")
    return len(data).to_bytes(4, "big") + data


def entry_hash(
    seq: int,
    time: str,
    actor: str,
    action: str,
    subject: str,
    payload_digest: str,
    prev_hash: str,
) -> str:
    """Hex SHA-256 of ENTRY_DOMAIN || u64be(seq) || each text field as u32be(len) || UTF-8.

    Text fields in order: time, actor, action, subject, payload_digest, prev_hash. Length
    prefixes make the encoding injective, so no two different entries share an encoding.
    """
    data = b"".join(
        (
            ENTRY_DOMAIN,
            seq.to_bytes(8, "big"),
            _field(time),
            _field(actor),
            _field(action),
            _field(subject),
            _field(payload_digest),
            _field(prev_hash),
        )
    )
    return hashlib.sha256(data).hexdigest()


def expected_hash(entry: Entry) -> str:
    """The hash ``entry`` should carry given its other fields."""
    return entry_hash(
        entry.seq,
        entry.time,
        entry.actor,
        entry.action,
        entry.subject,
        entry.payload_digest,
        entry.prev_hash,
    )


def make_entry(
    seq: int,
    time: str,
    actor: str,
    action: str,
    subject: str,
    digest: str,
    prev_hash: str,
) -> Entry:
    """A new entry with its hash filled in."""
    h = entry_hash(seq, time, actor, action, subject, digest, prev_hash)
    return Entry(seq, time, actor, action, subject, digest, prev_hash, h)
