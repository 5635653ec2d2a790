"""A throw-away PostgreSQL cluster for tests: Debian's server binaries, a fresh data
directory, listening on 127.0.0.1 only (and a Unix socket inside the directory), trust
authentication for one role, stopped and removed afterwards.

PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres``
system user the Debian package creates and its commands run through ``runuser``. Without
the server the tests that need it fail under CI (``CI`` set) and skip on a developer's
machine; ``make test`` installs the ``postgresql`` package when it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

ROLE = "healthspace"
# Copying a template waits up to this many times 50 ms for its last sessions to end (the
# test cluster runs without autovacuum, whose workers would otherwise visit templates).
_COPY_ATTEMPTS = 600


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def unavailable(message: str) -> None:
    message += " (install it with `apt-get install postgresql`, or run `make test`)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One running cluster; :meth:`database` makes a fresh database and returns its URL."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            unavailable("PostgreSQL tests need Debian's PostgreSQL server")
        assert bindir is not None
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="healthspace-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                unavailable("PostgreSQL tests under root need runuser")
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
            self.root.chmod(0o700)
        self._run(["initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust",
                   "--encoding=UTF8", "--no-locale"])
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                   "-t", "60", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} "
                   "-c fsync=off -c full_page_writes=off -c synchronous_commit=off "
                   "-c max_connections=200 -c autovacuum=off", "start"])

    def _run(self, command: Sequence[str]) -> None:
        done = subprocess.run([*self._as, str(self.bindir / command[0]), *command[1:]],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{done.stderr}\n{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def database(self, prefix: str = "hub") -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={ROLE} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def copy(self, url: str) -> str:
        """A new database made from the one at ``url`` (which nothing may be connected to)."""
        import psycopg

        source = url.rsplit("/", 1)[1]
        name = f"{source.split('_')[0]}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={ROLE} dbname=postgres",
                             autocommit=True) as conn:
            # a template may have no other session: refuse new ones while copying and end
            # any pooled one left behind
            conn.execute(f'ALTER DATABASE "{source}" ALLOW_CONNECTIONS false')
            try:
                for attempt in range(_COPY_ATTEMPTS):
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (source,))
                    try:
                        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
                        break
                    except psycopg.errors.ObjectInUse:  # a terminated session still ending
                        if attempt == _COPY_ATTEMPTS - 1:
                            raise RuntimeError(f"template {source} still in use: "
                                               f"{self._sessions(conn, source)}") from None
                        time.sleep(0.05)
            finally:
                conn.execute(f'ALTER DATABASE "{source}" ALLOW_CONNECTIONS true')
        return self.url(name)

    @staticmethod
    def _sessions(conn: object, database: str) -> list[tuple[object, ...]]:
        """Who is connected to ``database`` (for the error when a copy cannot start)."""
        rows = conn.execute(  # type: ignore[attr-defined]
            "SELECT pid, backend_type, application_name, state, query FROM pg_stat_activity "
            "WHERE datname = %s", (database,)).fetchall()
        return list(rows)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
