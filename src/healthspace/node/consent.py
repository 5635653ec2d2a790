"""Patient consent kept in the node's state file: import, single changes, filters, summaries.

Changes take effect for the next computation; an iterative study keeps the snapshot taken at
its first round. Works while the agent runs (SQLite WAL).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from healthspace.core.canonical import digest
from healthspace.core.clock import iso
from healthspace.governance.consent import ConsentRecord, read_consent_csv
from healthspace.governance.consent_filter import ConsentFilter
from healthspace.governance.policy import ConsentTier
from healthspace.node import audit
from healthspace.node.state import NodeState


def _key(record: ConsentRecord) -> str:
    if record.person_source_value is not None:
        return f"psv:{record.person_source_value}"
    return f"pid:{record.person_id}"


def upsert(state: NodeState, records: list[ConsentRecord], *, action: str = "consent.change",
           actor: str = "data_holder") -> int:
    """Insert or replace consent records (one per person); returns how many were written."""
    now = iso(state.clock.now())
    rows = [
        (
            _key(r),
            r.person_source_value,
            r.person_id,
            r.tier.value,
            ";".join(p.value for p in r.purposes) if r.purposes else None,
            iso(r.updated_at) if r.updated_at else now,
        )
        for r in records
    ]
    with state.connect() as db:
        db.executemany("INSERT OR REPLACE INTO consent VALUES (?, ?, ?, ?, ?, ?)", rows)
    tiers = Counter(r.tier.value for r in records)
    audit.record(state, action, f"consent:{len(rows)}",
                 {"records": len(rows), "tiers": dict(tiers), "digest": _digest(rows)},
                 actor=actor)
    return len(rows)


def _digest(rows: list[tuple[Any, ...]]) -> str:
    """A digest of the records, so the ledger proves which consent was applied when."""
    return digest([list(r) for r in sorted(rows, key=lambda r: str(r[0]))])


def import_csv(state: NodeState, path: Path) -> int:
    """Validate the whole file first, so a bad row changes nothing."""
    return upsert(state, read_consent_csv(path), action="consent.import")


def records(state: NodeState) -> list[ConsentRecord]:
    with state.connect() as db:
        rows = db.execute(
            "SELECT person_source_value, person_id, tier, purposes, updated_at FROM consent"
        ).fetchall()
    return [
        ConsentRecord(
            person_source_value=psv,
            person_id=pid,
            tier=ConsentTier(tier),
            purposes=purposes.split(";") if purposes else None,
            updated_at=updated,
        )
        for psv, pid, tier, purposes, updated in rows
    ]


def build_filter(state: NodeState, purpose: str, study_id: int | None = None) -> ConsentFilter:
    """The filter for a computation; a study reuses the snapshot of its first round."""
    if study_id is not None:
        with state.connect() as db:
            row = db.execute(
                "SELECT body FROM consent_snapshots WHERE study_id = ?", (study_id,)
            ).fetchone()
        if row:
            return ConsentFilter.from_json(json.loads(row[0]))
    default_tier = state.policy().consent_default_tier
    flt = ConsentFilter.build(records(state), default_tier, purpose)
    if study_id is not None:
        with state.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO consent_snapshots VALUES (?, ?, ?)",
                (study_id, json.dumps(flt.to_json()), iso(state.clock.now())),
            )
    return flt


def tier_counts(state: NodeState) -> dict[str, int]:
    """Explicit consent records per tier (persons without a record are not counted)."""
    with state.connect() as db:
        rows = db.execute("SELECT tier, count(*) FROM consent GROUP BY tier").fetchall()
    counts: Counter[str] = Counter({t.value: 0 for t in ConsentTier})
    counts.update({tier: int(n) for tier, n in rows})
    return dict(counts)


def published_tiers(state: NodeState, k: int) -> dict[str, Any]:
    """Tier counts for the hub: rounded to 10 and ``"<k"`` below the minimum cell size."""
    from healthspace.privacy.disclosure import release_count

    out: dict[str, Any] = {}
    for tier, n in tier_counts(state).items():
        released = release_count(n, k)
        out[tier] = released if isinstance(released, str) else int(round(n / 10) * 10)
    return out
