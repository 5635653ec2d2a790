"""Hub migration 0002 creates exactly the tables the SQLAlchemy ledger backend declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from healthspace.hub.db.session import make_engine
from healthspace.ledger.sqla_store import LEDGER_METADATA


def test_migration_matches_ledger_metadata(hub_template: Path) -> None:
    engine = make_engine(f"sqlite:///{hub_template}")
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), LEDGER_METADATA
            )
    finally:
        engine.dispose()
    ours = set(LEDGER_METADATA.tables)
    # The hub's own tables are not in LEDGER_METADATA, so they show up as removals: ignore them.
    others = [
        d for d in diffs
        if not (isinstance(d, tuple) and d[0] in ("remove_table", "remove_index")
                and (d[1].name if d[0] == "remove_table" else d[1].table.name) not in ours)
    ]
    assert others == []
