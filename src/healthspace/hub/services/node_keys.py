"""Node signing keys: registration (at enrolment or trust on first use), rotation, history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.envelope import EnvelopeError, verify_rotation
from healthspace.core.errors import Conflict, InvalidInput
from healthspace.hub.db.models import Node, NodeKey

STATEMENT_FIELDS = ("old_key", "new_key", "at", "old_signature", "new_signature")


def register(session: Session, clock: Clock, node: Node, public_key: str) -> None:
    """Make ``public_key`` the node's current key; earlier keys are kept, retired.

    A key already registered for another node is a conflict: keys identify their node.
    """
    owner = session.scalar(select(NodeKey).where(NodeKey.public_key == public_key))
    if owner is not None and owner.node_id != node.id:
        raise Conflict("this public key is registered for another node", field="public_key")
    if owner is not None and owner.retired_at is None:
        return  # already the current key
    if owner is not None:
        raise Conflict("this key was retired for this node; generate a new one",
                       field="public_key")
    now = clock.now()
    session.execute(
        update(NodeKey)
        .where(NodeKey.node_id == node.id, NodeKey.retired_at.is_(None))
        .values(retired_at=now)
    )
    session.add(NodeKey(node_id=node.id, public_key=public_key, registered_at=now))
    node.public_key = public_key


def trusted(session: Session, node_id: int, sealed_at: datetime) -> set[str]:
    """Keys that may sign an envelope sealed at ``sealed_at``.

    The current key, and a retired key only for envelopes sealed before it was retired —
    so a message in flight during a rotation still verifies, but the old key cannot sign
    anything new (the freshness window bounds how late such a message may arrive).
    """
    return set(session.scalars(_TRUSTED, {"node_id": node_id, "sealed_at": sealed_at}))


_TRUSTED = select(NodeKey.public_key).where(  # every signed envelope reads it: built once
    NodeKey.node_id == bindparam("node_id"),
    or_(NodeKey.retired_at.is_(None), NodeKey.retired_at >= bindparam("sealed_at")),
)


def history(session: Session, node_id: int) -> set[str]:
    """Every key the node ever registered (to re-verify stored envelopes)."""
    return set(session.scalars(select(NodeKey.public_key).where(NodeKey.node_id == node_id)))


def rotate(
    session: Session, clock: Clock, node: Node, statement: dict[str, Any], signer: str
) -> dict[str, Any]:
    """Register the new key of a rotation statement signed (and enveloped) by the current key."""
    if node.public_key is None or signer != node.public_key:
        raise EnvelopeError("a key rotation must be signed with the node's current key",
                            field="key_id")
    for name in STATEMENT_FIELDS:
        if not isinstance(statement.get(name), str):
            raise InvalidInput("missing from the rotation statement", field=f"payload.{name}")
    if statement["old_key"] != signer:
        raise InvalidInput("old_key must be the key that signed the envelope",
                           field="payload.old_key")
    try:
        new_key = verify_rotation({name: statement[name] for name in STATEMENT_FIELDS})
    except EnvelopeError as exc:
        raise EnvelopeError(exc.message, field="payload") from exc
    if new_key == signer:
        raise InvalidInput("new_key must differ from old_key", field="payload.new_key")
    register(session, clock, node, new_key)
    return {"node": node.name, "public_key": new_key, "retired": signer}
