"""Secure aggregation at the hub: nodes' one-time prekeys, sessions and their rosters.

The hub never holds a secret here. It stores the signed one-time X25519 keys nodes upload,
assigns one unused key per node to each new session, and relays the roster inside the
hub-signed task; every node checks every signature itself (docs/secure-aggregation.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.envelope import Envelope
from healthspace.core.errors import InvalidInput, invalid_from_validation
from healthspace.core.models import RosterEntry, SecureRound
from healthspace.hub.db.models import Node, SecaggPrekey, SecaggSession, Study
from healthspace.hub.services import audit, envelopes
from healthspace.privacy.secagg_keys import Prekey, prekey_signed_by

MAX_STOCK = 64  # unused prekeys the hub keeps per node
MAX_UPLOAD = 32


class PrekeyUpload(BaseModel):
    """The payload of an Envelope(kind="secagg.prekeys")."""

    model_config = ConfigDict(extra="forbid")

    prekeys: list[Prekey] = Field(min_length=1, max_length=MAX_UPLOAD)


class PrekeyStock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    available: int = Field(description="this node's prekeys not yet assigned to a session")


def available(session: Session, node_id: int) -> int:
    """Unassigned prekeys signed by the node's current key (older ones are never used)."""
    return int(session.scalar(
        select(func.count()).select_from(SecaggPrekey)
        .join(Node, Node.id == SecaggPrekey.node_id)
        .where(SecaggPrekey.node_id == node_id, SecaggPrekey.session_id.is_(None),
               SecaggPrekey.node_key == Node.public_key)) or 0)


def stock(session: Session, node_id: int) -> PrekeyStock:
    return PrekeyStock(available=available(session, node_id))


def upload(session: Session, clock: Clock, node_id: int, envelope: Envelope) -> PrekeyStock:
    """Verify and store a node's signed prekeys; each must be signed by its current key."""
    envelopes.accept(session, clock, node_id, envelope, kind="secagg.prekeys")
    try:
        body = PrekeyUpload.model_validate(envelope.payload)
    except ValidationError as exc:
        raise invalid_from_validation(exc, prefix=("payload",)) from exc
    node = session.get(Node, node_id)
    assert node is not None and node.public_key is not None  # accept() checked the key
    have = available(session, node_id)
    if have + len(body.prekeys) > MAX_STOCK:
        raise InvalidInput(f"the hub keeps at most {MAX_STOCK} unused prekeys per node; "
                           f"{have} are unused", field="payload.prekeys")
    now = clock.now()
    for i, prekey in enumerate(body.prekeys):
        if prekey.node != node.name:
            raise InvalidInput(f"prekey for node {prekey.node}, not {node.name}",
                               field=f"payload.prekeys[{i}].node")
        if not prekey_signed_by(prekey, node.public_key):
            raise InvalidInput("prekey signature does not verify with the node key",
                               field=f"payload.prekeys[{i}].signature")
        if session.scalar(select(SecaggPrekey.id).where(SecaggPrekey.key_id == prekey.key_id)):
            raise InvalidInput("prekey id already uploaded", field=f"payload.prekeys[{i}].key_id")
        session.add(SecaggPrekey(node_id=node_id, key_id=prekey.key_id,
                                 prekey=prekey.model_dump(mode="json"),
                                 node_key=node.public_key, uploaded_at=now))
    session.commit()
    return stock(session, node_id)


def session_for(session: Session, clock: Clock, study: Study,
                nodes: Sequence[Node]) -> tuple[SecaggSession | None, list[Node]]:
    """The session for a round over ``nodes``: the study's latest one if its roster is exactly
    these nodes, else a new one with one unused prekey per node. Returns the session (None
    when fewer than two nodes have a prekey) and the nodes that have none."""
    names = sorted(n.name for n in nodes)
    latest = session.scalar(select(SecaggSession).where(SecaggSession.study_id == study.id)
                            .order_by(SecaggSession.id.desc()).limit(1))
    if latest is not None and latest.nodes == names:
        return latest, []
    picked: dict[int, SecaggPrekey] = {}
    for node in nodes:
        key = session.scalar(
            select(SecaggPrekey)
            .where(SecaggPrekey.node_id == node.id, SecaggPrekey.session_id.is_(None),
                   SecaggPrekey.node_key == node.public_key)
            .order_by(SecaggPrekey.id).limit(1))
        if key is not None:
            picked[node.id] = key
    keyless = [n for n in nodes if n.id not in picked]
    if len(picked) < 2:
        return None, keyless
    members = sorted((n for n in nodes if n.id in picked), key=lambda n: n.name)
    roster = [RosterEntry(prekey=Prekey.model_validate(picked[n.id].prekey),
                          node_key=picked[n.id].node_key).model_dump(mode="json")
              for n in members]
    created = SecaggSession(study_id=study.id,
                            name=f"study-{study.id}/{secrets.token_hex(8)}",
                            nodes=[n.name for n in members], roster=roster,
                            created_at=clock.now())
    session.add(created)
    session.flush()
    for key in picked.values():
        key.session_id = created.id
    audit.queue(session, "hub", "secagg.session", f"study:{study.id}",
                {"session": created.name, "nodes": created.nodes,
                 "keys": [picked[n.id].key_id for n in members]})
    return created, keyless


def secure_round(row: SecaggSession | None) -> SecureRound | None:
    if row is None:
        return None
    return SecureRound(session_id=row.name,
                       roster=[RosterEntry.model_validate(e) for e in row.roster])
