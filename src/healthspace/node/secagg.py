"""The node's side of secure aggregation: one-time prekeys, roster checks, masking.

The node keeps the private halves of its one-time X25519 prekeys in its state file. A prekey
is bound to the first session that uses it and refused for any other; a (session, round) is
masked at most once (two different vectors under the same masks would leak their
difference); the private key is deleted a day after its session began. Peers' Ed25519 node
keys are pinned on first use, so a hub that later swaps a peer's key is caught.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from healthspace.analyses.base import Summable
from healthspace.analyses.secure import Masker, pack
from healthspace.core.clock import iso
from healthspace.core.errors import Refused
from healthspace.core.models import TaskAssignment
from healthspace.node.state import NodeState
from healthspace.privacy.secagg import mask
from healthspace.privacy.secagg_keys import Prekey, RosterError, make_prekey, verify_prekey_roster

LOW_WATER = 8  # top the hub's stock up when fewer unused prekeys remain
BATCH = 24
SESSION_RETENTION = timedelta(days=1)


def new_prekeys(state: NodeState, node: str, count: int = BATCH) -> list[Prekey]:
    """Make and keep ``count`` one-time keys; returns their signed public halves to upload."""
    key = state.signing_key()
    now = iso(state.clock.now())
    made: list[Prekey] = []
    with state.connect() as db:
        for _ in range(count):
            private, prekey = make_prekey(node, key)
            raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            db.execute("INSERT INTO secagg_prekeys (key_id, private_key, prekey, created_at) "
                       "VALUES (?, ?, ?, ?)", (prekey.key_id, raw.hex(),
                                               prekey.model_dump_json(), now))
            made.append(prekey)
    return made


def unbound(state: NodeState) -> int:
    """This node's prekeys not yet bound to a session (the hub may have assigned a few)."""
    with state.connect() as db:
        return int(db.execute("SELECT count(*) FROM secagg_prekeys WHERE session_id IS NULL")
                   .fetchone()[0])


def prune(state: NodeState) -> int:
    """Delete the private keys of sessions that began more than a day ago."""
    cutoff = iso(state.clock.now() - SESSION_RETENTION)
    with state.connect() as db:
        cur = db.execute("UPDATE secagg_prekeys SET private_key = NULL WHERE session_id IS NOT "
                         "NULL AND private_key IS NOT NULL AND bound_at < ?", (cutoff,))
        return int(cur.rowcount)


def forget_peer(state: NodeState, node: str) -> bool:
    """Drop a pinned peer key (after verifying a legitimate key change out of band)."""
    with state.connect() as db:
        return bool(db.execute("DELETE FROM peer_keys WHERE node = ?", (node,)).rowcount)


def _pin_peers(db: sqlite3.Connection, entries: list[tuple[str, str]], now: str) -> None:
    for node, key in entries:
        row = db.execute("SELECT public_key FROM peer_keys WHERE node = ?", (node,)).fetchone()
        if row is None:
            db.execute("INSERT INTO peer_keys VALUES (?, ?, ?)", (node, key, now))
        elif row[0] != key:
            raise RosterError(f"the roster carries a different node key for {node} than the one "
                              f"pinned here; verify it with {node}, then run 'healthspace node "
                              f"secagg forget-peer --store STORE {node}'", field="roster")


def masker_for(state: NodeState, assignment: TaskAssignment, site: str) -> Masker:
    """Check the task's roster and bind this node's prekey; the masker seals one Summable.

    Raises RosterError (the task is refused) on a bad roster, an unknown or reused prekey.
    """
    secure = assignment.secure
    assert secure is not None
    session_id = secure.session_id
    entries = [(e.prekey, e.node_key) for e in secure.roster]
    peers = verify_prekey_roster(entries)
    own = [p for p, _ in entries if p.node == site]
    if len(own) != 1:
        raise RosterError(f"node {site} is not in the roster of session {session_id}",
                          field="roster")
    now = iso(state.clock.now())
    with state.connect() as db:
        _pin_peers(db, [(p.node, key) for p, key in entries if p.node != site], now)
        row = db.execute("SELECT private_key, prekey, session_id FROM secagg_prekeys "
                         "WHERE key_id = ?", (own[0].key_id,)).fetchone()
        if row is None or Prekey.model_validate_json(row[1]) != own[0]:
            raise RosterError("the roster carries a prekey this node never made",
                              field="roster")
        if row[2] is not None and row[2] != session_id:
            raise RosterError(f"prekey {own[0].key_id} is already bound to session {row[2]}; "
                              "a one-time key is never reused", field="roster")
        if row[0] is None:
            raise RosterError(f"the private key of session {session_id} was deleted",
                              field="roster")
        if row[2] is None:
            db.execute("UPDATE secagg_prekeys SET session_id = ?, bound_at = ? WHERE key_id = ?",
                       (session_id, now, own[0].key_id))
    private = X25519PrivateKey.from_private_bytes(bytes.fromhex(row[0]))

    def seal(summable: Summable) -> dict[str, Any]:
        with state.connect() as db:
            try:
                db.execute("INSERT INTO secagg_rounds VALUES (?, ?, ?, ?)",
                           (session_id, assignment.round, assignment.task_id,
                            iso(state.clock.now())))
            except sqlite3.IntegrityError:
                raise Refused(f"round {assignment.round} of session {session_id} was already "
                              "masked; masks are never reused") from None
        payload = mask(summable.sums, node=site, private_key=private, peers=peers,
                       session_id=session_id, round=assignment.round,
                       compact=summable.compact)
        return pack(summable, payload)

    return seal
