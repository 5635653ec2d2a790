"""Node ledger checkpoints published to the hub: signed tree heads kept as envelopes.

A node that later truncated its own ledger (entries and checkpoints together) is caught by
verifying its state file against these copies (``audit verify --node-state … --hub-db …``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.envelope import Envelope
from healthspace.core.errors import InvalidInput, NotFound
from healthspace.hub.db.models import Node, StoredEnvelope
from healthspace.hub.services import envelopes, node_keys
from healthspace.ledger.checkpoint import Checkpoint, verify_checkpoint

KIND = "ledger.checkpoint"


def publish(session: Session, clock: Clock, node_id: int, envelope: Envelope) -> dict[str, int]:
    """Store a node's signed checkpoint; it must be signed by one of the node's keys."""
    stored = envelopes.accept(session, clock, node_id, envelope, kind=KIND)
    try:
        cp = Checkpoint.from_dict(envelope.payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"not a ledger checkpoint: {exc}", field="payload") from exc
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("node not found")
    problem = verify_checkpoint(cp, node_keys.history(session, node_id))
    if problem is not None:
        raise InvalidInput(f"checkpoint rejected: {problem}", field="payload.signature")
    session.commit()
    return {"size": cp.size, "envelope_id": stored.id}


def published(session: Session, node_name: str) -> list[Checkpoint]:
    """Every checkpoint a node published, oldest first."""
    node = session.scalar(select(Node).where(Node.name == node_name))
    if node is None:
        raise NotFound(f"no node named {node_name!r}", field="node_name")
    rows = session.scalars(
        select(StoredEnvelope)
        .where(StoredEnvelope.node_id == node.id, StoredEnvelope.kind == KIND)
        .order_by(StoredEnvelope.id)
    )
    return [Checkpoint.from_dict(row.body["payload"]) for row in rows]
