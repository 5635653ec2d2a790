"""Writing a service's files: secrets at mode 0600 from the first byte, TOML with comments."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from healthspace.core.errors import Conflict

PRIVATE = 0o600
PUBLIC = 0o644


def write_file(path: Path, data: str | bytes, mode: int = PRIVATE) -> Path:
    """Create ``path`` with ``mode`` (never briefly wider) and write ``data``; never overwrite.

    The file is opened with O_EXCL and its mode given to ``open``, so a secret is not
    readable by others between creation and a later chmod.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise Conflict(f"{path} already exists; refusing to overwrite it", field="dir") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    os.chmod(path, mode)  # the umask may have narrowed it further than asked; be exact
    return path


def private_sqlite(path: Path) -> None:
    """Pre-create a SQLite file at 0600 so the database (and its -wal/-shm, which SQLite
    creates with the main file's mode) never exists world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE))
    tighten(path)


def tighten(path: Path) -> None:
    """Mode 0600 for a SQLite file and the journal files beside it."""
    for candidate in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
        if candidate.exists():
            os.chmod(candidate, PRIVATE)


def sqlite_path(db_url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (None for other databases or in-memory)."""
    for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
        if db_url.startswith(prefix):
            rest = db_url[len(prefix):].split("?", 1)[0]
            return Path(rest) if rest and rest != ":memory:" else None
    return None


def toml_value(value: Any) -> str:
    """A TOML literal for the simple values a config holds (JSON strings are TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def toml_lines(items: Iterable[tuple[str, Any, str]]) -> list[str]:
    """``key = value`` lines, each after its comment; a None value is written commented out."""
    lines: list[str] = []
    for key, value, comment in items:
        if comment:
            lines.append(f"# {comment}")
        if value is None:
            lines.append(f"# {key} = ")
        else:
            lines.append(f"{key} = {toml_value(value)}")
    return lines
