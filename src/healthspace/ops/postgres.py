"""PostgreSQL client tools (pg_dump, pg_restore) run against a SQLAlchemy URL.

The password travels in ``PGPASSWORD`` (never on a command line another user could read
with ``ps``); errors quote the tool's stderr with any password removed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from healthspace.core.errors import HealthspaceError, InvalidInput
from healthspace.core.logs import redact_text

_SSL_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword")


class ToolFailed(HealthspaceError):
    """A PostgreSQL client tool exited with an error (exit code 1)."""


def _version(path: str) -> int:
    part = path.split("/")[4] if path.startswith("/usr/lib/postgresql/") else ""
    return int(part) if part.isdigit() else 0


def find_tool(name: str) -> Path:
    """``name`` from PATH, else the newest /usr/lib/postgresql/*/bin (Debian's layout).

    The newest is preferred there: pg_dump refuses servers newer than itself.
    """
    packaged = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    if packaged:
        return Path(packaged[-1])
    found = shutil.which(name)
    if found:
        return Path(found)
    raise InvalidInput(
        f"{name} not found on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL "
        "client (e.g. apt-get install postgresql-client)", field="db")


def connection_args(url: str) -> tuple[list[str], dict[str, str]]:
    """Command-line options and environment for a libpq tool from a SQLAlchemy URL."""
    parsed = make_url(url)
    if not parsed.database:
        raise InvalidInput(f"{parsed.render_as_string(hide_password=True)} names no database",
                           field="db")
    args = ["--dbname", parsed.database]
    if parsed.host:
        args += ["--host", parsed.host]
    if parsed.port:
        args += ["--port", str(parsed.port)]
    if parsed.username:
        args += ["--username", parsed.username]
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    for key in _SSL_PARAMS:
        value = parsed.query.get(key)
        if isinstance(value, str):
            env["PG" + key.upper()] = value
    return args, env


def run_tool(name: str, url: str, extra: Sequence[str]) -> str:
    """Run ``name`` against the database at ``url``; its stdout, or ToolFailed with stderr."""
    args, env = connection_args(url)
    command = [str(find_tool(name)), *args, *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = redact_text(done.stderr.strip())[-2000:]
        raise ToolFailed(f"{name} failed (exit {done.returncode}): {message}")
    return done.stdout


def list_archive(path: Path) -> str:
    """``pg_restore --list``: reads the whole archive table of contents (a corrupt one fails)."""
    done = subprocess.run([str(find_tool("pg_restore")), "--list", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InvalidInput(f"{path} is not a readable pg_dump archive: "
                           f"{done.stderr.strip()[-500:]}", field="from")
    return done.stdout
