"""The node's mutable state: a SQLite (WAL) file beside the CDM store.

Holds the node's keys, its identity vault (site person_id -> national id, used only for record
linkage), the outbox of results not yet acknowledged by the hub, a log of what it ran and the
ε charged to each consumer for differentially private tasks and the cohorts released to each
consumer as exact counts (the differencing defence).
Admin commands can open it while the agent runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from healthspace.core.clock import Clock, SystemClock, iso
from healthspace.core.errors import IngestError, InvalidInput
from healthspace.governance.policy import UsagePolicy

SCHEMA_VERSION = "1"

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
  kind TEXT PRIMARY KEY, private_key TEXT NOT NULL, public_key TEXT NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identity_vault (
  person_id INTEGER PRIMARY KEY, national_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
  task_id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL, round INTEGER NOT NULL,
  body TEXT NOT NULL, created_at TEXT NOT NULL, acked_at TEXT);
CREATE TABLE IF NOT EXISTS retired_keys (
  public_key TEXT PRIMARY KEY, private_key TEXT NOT NULL, retired_at TEXT NOT NULL,
  rotation TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hub_keys (
  public_key TEXT PRIMARY KEY, pinned_at TEXT NOT NULL, retired_at TEXT);
CREATE TABLE IF NOT EXISTS policy (
  id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL, version INTEGER NOT NULL,
  updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS consent (
  person_key TEXT PRIMARY KEY, person_source_value TEXT, person_id INTEGER,
  tier TEXT NOT NULL, purposes TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS consent_snapshots (
  study_id INTEGER PRIMARY KEY, body TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER NOT NULL, study_id INTEGER NOT NULL,
  round INTEGER NOT NULL, analysis TEXT NOT NULL, consumer TEXT, purpose TEXT,
  status TEXT NOT NULL, records INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0,
  error TEXT, finished_at TEXT NOT NULL, preview INTEGER NOT NULL DEFAULT 0);
"""

# The ε budget ledger (healthspace.node.budget): one row per charged task, never updated.
DP_CHARGES_DDL = """
CREATE TABLE IF NOT EXISTS dp_charges (
  study_id INTEGER NOT NULL, round INTEGER NOT NULL, task_id INTEGER NOT NULL,
  consumer TEXT NOT NULL, period TEXT NOT NULL, epsilon REAL NOT NULL,
  charged_at TEXT NOT NULL, PRIMARY KEY (study_id, round, task_id));
CREATE INDEX IF NOT EXISTS dp_charges_consumer ON dp_charges (consumer, period);
"""

# Exact cohort counts released per consumer (healthspace.node.differencing). The person-id
# sets are zlib-compressed sorted int64 arrays; they never leave the node.
RELEASES_DDL = """
CREATE TABLE IF NOT EXISTS releases (
  study_id INTEGER NOT NULL, round INTEGER NOT NULL, task_id INTEGER NOT NULL,
  consumer TEXT NOT NULL, fingerprint TEXT NOT NULL, size INTEGER NOT NULL,
  min_cell INTEGER NOT NULL, persons BLOB NOT NULL, released_at TEXT NOT NULL,
  PRIMARY KEY (study_id, round, task_id));
CREATE INDEX IF NOT EXISTS releases_consumer ON releases (consumer, size);
"""


# Secure aggregation (healthspace.node.secagg): one-time prekeys (private halves deleted a day
# after their session began), the (session, round) pairs already masked, pinned peer keys.
SECAGG_DDL = """
CREATE TABLE IF NOT EXISTS secagg_prekeys (
  key_id TEXT PRIMARY KEY, private_key TEXT, prekey TEXT NOT NULL, created_at TEXT NOT NULL,
  session_id TEXT, bound_at TEXT);
CREATE TABLE IF NOT EXISTS secagg_rounds (
  session_id TEXT NOT NULL, round INTEGER NOT NULL, task_id INTEGER NOT NULL,
  masked_at TEXT NOT NULL, PRIMARY KEY (session_id, round));
CREATE TABLE IF NOT EXISTS peer_keys (
  node TEXT PRIMARY KEY, public_key TEXT NOT NULL, pinned_at TEXT NOT NULL);
"""

# Persons a membership record-linkage study found shared (healthspace.analyses.psi_link).
PSI_LINKS_DDL = """
CREATE TABLE IF NOT EXISTS psi_links (
  study_id INTEGER NOT NULL, person_id INTEGER NOT NULL, linked_at TEXT NOT NULL,
  PRIMARY KEY (study_id, person_id));
"""

MODEL_SCORES_DDL = """
CREATE TABLE IF NOT EXISTS model_scores (
  model_id INTEGER NOT NULL, model_name TEXT NOT NULL, model_version INTEGER NOT NULL,
  study_id INTEGER, person_id INTEGER NOT NULL, score REAL NOT NULL, scored_at TEXT NOT NULL,
  PRIMARY KEY (model_id, person_id));
"""
# Per-record findings an analysis keeps on the node instead of releasing them (e.g. the
# payer's per-claim evidence answers): one JSON row each, by study and kind.
FINDINGS_DDL = """
CREATE TABLE IF NOT EXISTS findings (
  study_id INTEGER, kind TEXT NOT NULL, seq INTEGER NOT NULL, row TEXT NOT NULL,
  found_at TEXT NOT NULL, PRIMARY KEY (study_id, kind, seq));
"""
_ALL_DDL = (_DDL + DP_CHARGES_DDL + RELEASES_DDL + SECAGG_DDL + PSI_LINKS_DDL
            + MODEL_SCORES_DDL + FINDINGS_DDL)


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a state file made by an earlier version up to date: new tables, new columns."""
    for statement in filter(str.strip, _ALL_DDL.split(";")):
        db.execute(statement)
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    if "preview" not in columns:
        db.execute("ALTER TABLE runs ADD COLUMN preview INTEGER NOT NULL DEFAULT 0")


class NodeState:
    """Access to one node's state file; every method is a short transaction."""

    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self._upgraded = False

    @classmethod
    def init(cls, path: Path, clock: Clock | None = None, name: str | None = None) -> NodeState:
        """Create the state file and the node's Ed25519 key; idempotent.

        ``name`` (default: the store's file stem) names the node's ledger and never changes.
        """
        state = cls(path, clock)
        state.path.parent.mkdir(parents=True, exist_ok=True)
        if not state.path.exists():  # it holds the node's private key: owner-only from the start
            os.close(os.open(state.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        ddl = sqlite3.connect(state.path, timeout=30)
        try:
            ddl.execute("PRAGMA journal_mode=WAL")
            # executescript commits by itself, so outside connect()
            ddl.executescript(_ALL_DDL)
        finally:
            ddl.close()
        with state.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('created_at', ?)",
                (iso(state.clock.now()),),
            )
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('node_name', ?)",
                (name or state.path.name.split(".")[0],),
            )
            if db.execute("SELECT 1 FROM keys WHERE kind = 'ed25519'").fetchone() is None:
                key = SigningKey.generate()
                db.execute(
                    "INSERT INTO keys VALUES ('ed25519', ?, ?, ?)",
                    (key.encode().hex(), key.verify_key.encode().hex(), iso(state.clock.now())),
                )
        return state

    @classmethod
    def open(cls, path: Path, clock: Clock | None = None) -> NodeState:
        if not Path(path).exists():
            raise InvalidInput(
                f"node state file {path} does not exist; run 'healthspace node init' first",
                field="store",
            )
        return cls(path, clock)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE")
            try:
                if not self._upgraded:  # once per instance: older files get new tables
                    _upgrade(db)
                    self._upgraded = True
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # --- identity -------------------------------------------------------------------

    def node_name(self) -> str:
        """The node's name as its own ledger's owner: fixed when the state is created."""
        with self.connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'node_name'").fetchone()
        return str(row[0]) if row else self.path.name.split(".")[0]

    # --- keys ---------------------------------------------------------------------

    def signing_key(self) -> SigningKey:
        with self.connect() as db:
            row = db.execute("SELECT private_key FROM keys WHERE kind = 'ed25519'").fetchone()
        if row is None:
            raise InvalidInput("node state has no signing key; run 'healthspace node init'")
        return SigningKey(bytes.fromhex(row[0]))

    def public_key_hex(self) -> str:
        return self.signing_key().verify_key.encode().hex()

    def rotate_key(self) -> dict[str, str]:
        """Replace the signing key; the old key vouches for the new one (the statement)."""
        from healthspace.core.envelope import rotation_statement

        old = self.signing_key()
        new = SigningKey.generate()
        statement = rotation_statement(old, new, at=self.clock.now())
        now = iso(self.clock.now())
        with self.connect() as db:
            db.execute(
                "INSERT INTO retired_keys VALUES (?, ?, ?, ?)",
                (old.verify_key.encode().hex(), old.encode().hex(), now, json.dumps(statement)),
            )
            db.execute(
                "UPDATE keys SET private_key = ?, public_key = ?, created_at = ? "
                "WHERE kind = 'ed25519'",
                (new.encode().hex(), new.verify_key.encode().hex(), now),
            )
        return statement

    def retired_signing_key(self, public_key: str) -> SigningKey | None:
        with self.connect() as db:
            row = db.execute(
                "SELECT private_key FROM retired_keys WHERE public_key = ?", (public_key,)
            ).fetchone()
        return SigningKey(bytes.fromhex(row[0])) if row else None

    # --- the hub's pinned keys ---------------------------------------------------------

    def pinned_hub_keys(self) -> list[str]:
        with self.connect() as db:
            rows = db.execute("SELECT public_key FROM hub_keys ORDER BY pinned_at").fetchall()
        return [r[0] for r in rows]

    def pin_hub_key(self, public_key: str) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO hub_keys(public_key, pinned_at) VALUES (?, ?)",
                (public_key, iso(self.clock.now())),
            )

    # --- the node's usage policy (authoritative) ----------------------------------------

    def policy(self) -> UsagePolicy:
        """The stored policy, or the documented defaults when none was set."""
        with self.connect() as db:
            row = db.execute("SELECT body FROM policy WHERE id = 1").fetchone()
        return UsagePolicy.model_validate_json(row[0]) if row else UsagePolicy()

    def set_policy(self, policy: UsagePolicy) -> bool:
        """Store ``policy``; returns False when it equals the stored one."""
        body = policy.model_dump_json()
        with self.connect() as db:
            row = db.execute("SELECT body FROM policy WHERE id = 1").fetchone()
            if row and row[0] == body:
                return False
            db.execute(
                "INSERT OR REPLACE INTO policy VALUES (1, ?, ?, ?)",
                (body, policy.version, iso(self.clock.now())),
            )
        return True

    # --- identity vault -------------------------------------------------------------

    def load_identity(self, csv_path: Path) -> int:
        """Replace the identity vault with ``person_id,national_id`` rows from a CSV file."""
        rows: list[tuple[int, str]] = []
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = {name.lower().strip(): name for name in reader.fieldnames or []}
            for col in ("person_id", "national_id"):
                if col not in fields:
                    raise IngestError("missing column", file=str(csv_path), column=col)
            for line, rec in enumerate(reader, start=1):
                raw_id = (rec[fields["person_id"]] or "").strip()
                nid = (rec[fields["national_id"]] or "").strip()
                try:
                    pid = int(raw_id)
                except ValueError:
                    raise IngestError(
                        f"not an integer: {raw_id!r}",
                        file=str(csv_path),
                        row=line,
                        column="person_id",
                    ) from None
                if not nid:
                    raise IngestError(
                        "empty value", file=str(csv_path), row=line, column="national_id"
                    )
                rows.append((pid, nid))
        with self.connect() as db:
            db.execute("DELETE FROM identity_vault")
            db.executemany("INSERT INTO identity_vault VALUES (?, ?)", rows)
        return len(rows)

    def national_ids(self, person_ids: Sequence[int]) -> dict[int, str]:
        """The vault's national ids of these local persons (those without one are left out)."""
        with self.connect() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS _wanted (person_id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM _wanted")
            db.executemany("INSERT OR IGNORE INTO _wanted VALUES (?)",
                           [(int(p),) for p in person_ids])
            rows = db.execute("SELECT v.person_id, v.national_id FROM identity_vault v "
                              "JOIN _wanted w ON w.person_id = v.person_id").fetchall()
        return {int(pid): str(nid) for pid, nid in rows}

    def derive_secret(self, label: str) -> bytes:
        """A 32-byte secret for ``label`` (e.g. a study's PSI scalar seed), derived from the
        node's signing key: the same label gives the same secret, no one else can derive it."""
        seed = self.signing_key().encode()
        return hashlib.blake2b(label.encode("utf-8"), key=seed, digest_size=32,
                               person=b"hs-node-secret").digest()

    def keep_links(self, study_id: int, person_ids: Sequence[int]) -> int:
        """Remember which local persons a record-linkage study found at the other node."""
        now = iso(self.clock.now())
        with self.connect() as db:
            db.executemany("INSERT OR IGNORE INTO psi_links VALUES (?, ?, ?)",
                           [(study_id, int(p), now) for p in person_ids])
        return len(person_ids)

    def save_scores(self, model: dict[str, Any], study_id: int | None,
                    person_ids: Sequence[int], scores: Sequence[float]) -> int:
        """Write (replace) one model's risk scores of these persons into ``model_scores``."""
        now = iso(self.clock.now())
        key = (int(model["id"]), str(model["name"]), int(model["version"]))
        with self.connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO model_scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*key, study_id, int(pid), float(score), now)
                 for pid, score in zip(person_ids, scores, strict=True)])
        return len(person_ids)

    def scores(self, model_id: int) -> list[tuple[int, float, str]]:
        """(person_id, score, scored_at) of one model, by person."""
        with self.connect() as db:
            rows = db.execute("SELECT person_id, score, scored_at FROM model_scores "
                              "WHERE model_id = ? ORDER BY person_id", (model_id,)).fetchall()
        return [(int(a), float(b), str(c)) for a, b, c in rows]

    def save_findings(self, study_id: int | None, kind: str,
                      rows: Sequence[dict[str, Any]]) -> int:
        """Replace a study's findings of one kind with ``rows`` (JSON objects)."""
        now = iso(self.clock.now())
        with self.connect() as db:
            db.execute("DELETE FROM findings WHERE study_id IS ? AND kind = ?", (study_id, kind))
            db.executemany(
                "INSERT INTO findings VALUES (?, ?, ?, ?, ?)",
                [(study_id, kind, i, json.dumps(row, sort_keys=True, default=str), now)
                 for i, row in enumerate(rows)])
        return len(rows)

    def findings(self, study_id: int | None = None,
                 kind: str | None = None) -> list[dict[str, Any]]:
        """Kept findings, newest study first; each row with its study, kind and time."""
        sql = "SELECT study_id, kind, row, found_at FROM findings WHERE 1 = 1"
        args: list[Any] = []
        if study_id is not None:
            sql += " AND study_id = ?"
            args.append(study_id)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        with self.connect() as db:
            rows = db.execute(sql + " ORDER BY study_id DESC, kind, seq", args).fetchall()
        return [{"study_id": study, "kind": k, **json.loads(row), "found_at": at}
                for study, k, row, at in rows]

    def identity_count(self) -> int:
        with self.connect() as db:
            return int(db.execute("SELECT count(*) FROM identity_vault").fetchone()[0])

    # --- outbox -----------------------------------------------------------------------

    def put_result(self, task_id: int, study_id: int, round: int, body: dict[str, Any]) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?, ?, NULL)",
                (task_id, study_id, round, json.dumps(body), iso(self.clock.now())),
            )

    def pending_results(self) -> list[tuple[int, dict[str, Any]]]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT task_id, body FROM outbox WHERE acked_at IS NULL ORDER BY task_id"
            ).fetchall()
        return [(int(task_id), json.loads(body)) for task_id, body in rows]

    def ack_result(self, task_id: int) -> None:
        with self.connect() as db:
            db.execute(
                "UPDATE outbox SET acked_at = ? WHERE task_id = ?", (iso(self.clock.now()), task_id)
            )

    def requeue_result(self, task_id: int) -> None:
        """Mark a stored result as not yet acknowledged, so the outbox sends it again."""
        with self.connect() as db:
            db.execute("UPDATE outbox SET acked_at = NULL WHERE task_id = ?", (task_id,))

    def has_result(self, task_id: int) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT body FROM outbox WHERE task_id = ?", (task_id,)).fetchone()
        return json.loads(row[0]) if row else None

    # --- run log --------------------------------------------------------------------

    def log_run(self, **fields: Any) -> None:
        fields.setdefault("finished_at", iso(self.clock.now()))
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self.connect() as db:
            db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(fields.values()))

    def runs(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]
