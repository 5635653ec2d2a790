"""Ledger backend on SQLAlchemy Core (the hub database); tables created by hub migration 0002."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from healthspace.core.dbnaming import NAMING
from healthspace.ledger.checkpoint import Checkpoint
from healthspace.ledger.entry import GENESIS_HASH, Entry
from healthspace.ledger.store import LedgerConflict, check_run


def ledger_tables(metadata: MetaData, prefix: str = "ledger") -> tuple[Table, Table]:
    """The entries and checkpoints tables (``{prefix}_entries``, ``{prefix}_checkpoints``)."""
    entries = Table(
        f"{prefix}_entries",
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("time", String(40), nullable=False),
        Column("actor", String(200), nullable=False),
        Column("action", String(100), nullable=False),
        Column("subject", String(1000), nullable=False),
        Column("payload_digest", String(64), nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
    )
    checkpoints = Table(
        f"{prefix}_checkpoints",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("ledger_id", String(200), nullable=False),
        Column("size", Integer, nullable=False),
        Column("root", String(64), nullable=False),
        Column("time", String(40), nullable=False),
        Column("key_id", String(64), nullable=False),
        Column("signature", String(128), nullable=False),
        UniqueConstraint("size"),
    )
    return entries, checkpoints


LEDGER_METADATA = MetaData(naming_convention=NAMING)
LEDGER_ENTRIES, LEDGER_CHECKPOINTS = ledger_tables(LEDGER_METADATA)


@lru_cache(maxsize=8)
def _tables(prefix: str) -> tuple[Table, Table]:
    if prefix == "ledger":
        return LEDGER_ENTRIES, LEDGER_CHECKPOINTS
    return ledger_tables(MetaData(naming_convention=NAMING), prefix)


class SqlAlchemyLedgerStore:
    """A LedgerStore over an engine; the unique seq key makes a lost race fail, never fork."""

    def __init__(self, engine: Engine, *, table_prefix: str = "ledger") -> None:
        self.engine = engine
        self.table, self.cp_table = _tables(table_prefix)
        self._location = f"{engine.url.render_as_string(hide_password=True)}#{table_prefix}"
        t = self.table
        self._cols = (
            t.c.seq, t.c.time, t.c.actor, t.c.action, t.c.subject,
            t.c.payload_digest, t.c.prev_hash, t.c.hash,
        )
        self._cp_cols = tuple(self.cp_table.c[name] for name in (
            "ledger_id", "size", "root", "time", "key_id", "signature"))

    @property
    def location(self) -> str:
        return self._location

    def _last(self, conn: Connection) -> Entry | None:
        row = conn.execute(
            select(*self._cols).order_by(self.table.c.seq.desc()).limit(1)
        ).first()
        return Entry(*row) if row else None

    def _write(self, entries: Iterable[Entry]) -> int:
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock before reading
                last = self._last(conn)
                run = check_run(last.seq if last else 0, last.hash if last else GENESIS_HASH,
                                entries)
                if run:
                    conn.execute(insert(self.table), [e.to_dict() for e in run])
        except IntegrityError as exc:
            raise LedgerConflict("a concurrent append took this seq") from exc
        return len(run)

    def append_entry(self, entry: Entry) -> None:
        self._write((entry,))

    def append_many(self, entries: Iterable[Entry]) -> int:
        return self._write(entries)

    def last_entry(self) -> Entry | None:
        with self.engine.connect() as conn:
            return self._last(conn)

    def entry(self, seq: int) -> Entry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*self._cols).where(self.table.c.seq == seq)).first()
        return Entry(*row) if row else None

    def entries(self, start: int = 1, stop: int | None = None) -> Iterator[Entry]:
        query = select(*self._cols).where(self.table.c.seq >= start).order_by(self.table.c.seq)
        if stop is not None:
            query = query.where(self.table.c.seq < stop)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=10_000).execute(query)
            for row in result:
                yield Entry(*row)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.table)).scalar_one())

    def add_checkpoint(self, cp: Checkpoint) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(self.cp_table).values(**cp.to_dict()))
        except IntegrityError as exc:
            raise LedgerConflict(f"a checkpoint at size {cp.size} exists") from exc

    def checkpoints(self) -> list[Checkpoint]:
        c = self.cp_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(*self._cp_cols).order_by(c.size, c.id)).all()
        return [Checkpoint(*row) for row in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        c = self.cp_table.c
        with self.engine.connect() as conn:
            row = conn.execute(select(*self._cp_cols).order_by(c.size.desc()).limit(1)).first()
        return Checkpoint(*row) if row else None
