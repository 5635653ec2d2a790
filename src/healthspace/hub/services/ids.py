"""Row ids: the range the hub's integer primary keys hold, checked before any query uses one."""

from __future__ import annotations

from healthspace.core.envelope import MAX_ROW_ID

# Primary keys are 32-bit integers on PostgreSQL (64-bit on SQLite). A larger number names
# no row, and handing it to the database driver fails inside the query (an overflow, not a
# "not found"), so callers check it first and answer as for any missing row.
MAX_ID = MAX_ROW_ID


def storable(row_id: int) -> bool:
    """Whether ``row_id`` can be the id of a stored row."""
    return 1 <= row_id <= MAX_ID
