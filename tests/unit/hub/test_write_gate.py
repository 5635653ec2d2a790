"""The in-process write gate: SQLite writers of one hub queue in Python, readers never wait."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from healthspace.core.errors import InvalidInput
from healthspace.hub.db.session import StoreBusy, make_engine


def _engine(path: Path, timeout: float):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{path}?timeout={timeout}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    return engine


def test_concurrent_writers_all_commit_and_readers_pass_a_held_gate(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "g.db", timeout=10)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(20):
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": i * 100 + j})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    with engine.connect() as holder:  # a writer holds the gate and SQLite's lock
        holder.execute(text("INSERT INTO t VALUES (-1)"))
        for t in threads:
            t.start()
        time.sleep(0.3)
        with engine.connect() as reader:  # reads go on beside the waiting writers
            assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
        holder.commit()
    for t in threads:
        t.join()
    assert not errors
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 12 * 20 + 1
    engine.dispose()


def test_a_gate_held_past_the_busy_bound_is_store_busy(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "g.db", timeout=0.3)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (2)"))
        except BaseException as exc:
            failure.append(exc)

    with engine.connect() as holder:
        holder.execute(text("INSERT INTO t VALUES (1)"))
        other = threading.Thread(target=write)
        other.start()
        other.join(timeout=5)
        holder.rollback()
    assert len(failure) == 1 and isinstance(failure[0], StoreBusy)
    assert "busy" in str(failure[0])
    write()  # the gate is free again once the holder's connection went back
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [2]
    engine.dispose()


@pytest.mark.parametrize("statement", ["SELECT 1", "  select * from t", "PRAGMA user_version"])
def test_reads_never_take_the_gate(tmp_path: Path, statement: str) -> None:
    engine = _engine(tmp_path / "g.db", timeout=0.2)
    with engine.connect() as holder:
        holder.execute(text("INSERT INTO t VALUES (1)"))
        done: list[object] = []
        reader = threading.Thread(
            target=lambda: done.append(engine.connect().execute(text(statement)).all()))
        reader.start()
        reader.join(timeout=5)
        assert done, "a read waited for the write gate"
        holder.rollback()
    engine.dispose()


def test_sqlite_synchronous_level_comes_from_the_url(tmp_path: Path) -> None:
    """``full`` (2) unless the URL asks for ``normal`` (1); the parameter never reaches
    sqlite3.connect, and a value that is neither is a clear error naming the URL."""
    levels = {}
    for query in ("", "?synchronous=normal", "?synchronous=FULL&timeout=3"):
        engine = make_engine(f"sqlite:///{tmp_path / 's.db'}{query}")
        with engine.connect() as conn:
            levels[query] = conn.execute(text("PRAGMA synchronous")).scalar()
        engine.dispose()
    assert levels == {"": 2, "?synchronous=normal": 1, "?synchronous=FULL&timeout=3": 2}
    with pytest.raises(InvalidInput, match="synchronous='off'") as caught:
        make_engine(f"sqlite:///{tmp_path / 's.db'}?synchronous=off")
    assert caught.value.field == "db"
