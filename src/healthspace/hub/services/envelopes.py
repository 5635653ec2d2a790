"""Accepting signed node messages: who sent it, is it intact and fresh, was it seen before.

Every node→hub write arrives as a :class:`~healthspace.core.envelope.Envelope`. ``accept``
checks it against the calling node and the expected kind / study / round, verifies the
signature with the node's keys, rejects replays by nonce and timestamp, and stores it.
The caller commits, so a request that fails later leaves neither nonce nor envelope behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.envelope import (
    REPLAY_WINDOW,
    Envelope,
    EnvelopeError,
    ReplayError,
    verify_envelope,
)
from healthspace.core.errors import InvalidInput, NotFound, invalid_from_validation
from healthspace.hub.db.models import EnvelopeNonce, Node, StoredEnvelope
from healthspace.hub.services import node_keys
from healthspace.hub.services.throttle import Throttle

# Seen nonces are kept this long: an envelope is fresh only within ±REPLAY_WINDOW of its
# timestamp, so a nonce older than twice the window can never be replayed successfully.
NONCE_RETENTION = 2 * REPLAY_WINDOW
# Expired nonces are pruned at most once a minute of the hub's clock, not in every envelope's
# transaction (under load that DELETE was a write per message).
_PRUNE = Throttle(timedelta(minutes=1))

_UNSET: Any = object()
M = TypeVar("M", bound=BaseModel)


def _expect(envelope: Envelope, field: str, expected: Any) -> None:
    actual = getattr(envelope, field)
    if expected is not _UNSET and actual != expected:
        raise InvalidInput(f"envelope {field} is {actual!r}, expected {expected!r}", field=field)


@dataclass(frozen=True)
class Verified:
    """An envelope whose sender, kind, scope and signature have been checked; not stored yet."""

    node_id: int
    envelope: Envelope
    first_use: bool


_NODE_KEY = select(Node.public_key).where(Node.id == bindparam("node_id"))  # built once


def verify(
    session: Session,
    clock: Clock,
    node_id: int,
    envelope: Envelope,
    *,
    kind: str,
    study_id: Any = _UNSET,
    round: Any = _UNSET,
    trust_on_first_use: bool = False,
) -> Verified:
    """Check ``envelope`` from node ``node_id`` without writing; raise naming the failing field.

    Mismatches (kind, node_id, study_id, round) → 422; unknown key or bad signature → 401;
    a stale timestamp → 409. With ``trust_on_first_use`` a node that has no key yet may
    sign with the envelope's key (registered by :func:`store`).
    """
    _expect(envelope, "kind", kind)
    _expect(envelope, "node_id", node_id)
    _expect(envelope, "study_id", study_id)
    _expect(envelope, "round", round)
    node = session.execute(_NODE_KEY, {"node_id": node_id}).first()
    if node is None:
        raise NotFound("node not found")
    keys = node_keys.trusted(session, node_id, envelope.timestamp)
    first_use = not keys and node.public_key is None and trust_on_first_use
    if first_use:
        keys = {envelope.key_id}
    elif not keys:
        raise EnvelopeError(
            "no key is registered for this node: enrol it with its public key, or publish "
            "a signed catalogue first",
            field="key_id",
        )
    verify_envelope(envelope, keys, now=clock.now())
    return Verified(node_id, envelope, first_use)


def store(session: Session, clock: Clock, verified: Verified) -> StoredEnvelope:
    """Spend the envelope's nonce (a nonce seen before → 409) and keep the envelope; the
    caller commits. The first write of the caller's transaction."""
    node_id, envelope = verified.node_id, verified.envelope
    now = clock.now()
    if _PRUNE.due(session, clock):
        session.execute(delete(EnvelopeNonce).where(EnvelopeNonce.seen_at < now - NONCE_RETENTION))
    session.add(EnvelopeNonce(nonce=envelope.nonce, node_id=node_id, seen_at=now))
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ReplayError("this envelope's nonce was already used; re-seal the message",
                          field="nonce") from exc
    if verified.first_use:
        node = session.get(Node, node_id)
        if node is None:
            raise NotFound("node not found")
        node_keys.register(session, clock, node, envelope.key_id)
    stored = StoredEnvelope(
        node_id=node_id,
        kind=envelope.kind,
        study_id=envelope.study_id,
        round=envelope.round,
        nonce=envelope.nonce,
        body=envelope.model_dump(mode="json"),
        received_at=now,
    )
    session.add(stored)
    session.flush()
    return stored


def accept(
    session: Session,
    clock: Clock,
    node_id: int,
    envelope: Envelope,
    *,
    kind: str,
    study_id: Any = _UNSET,
    round: Any = _UNSET,
    trust_on_first_use: bool = False,
) -> StoredEnvelope:
    """:func:`verify` then :func:`store`: a nonce seen before → 409 as well."""
    return store(session, clock, verify(session, clock, node_id, envelope, kind=kind,
                                        study_id=study_id, round=round,
                                        trust_on_first_use=trust_on_first_use))


def payload_as(envelope: Envelope, model: type[M]) -> M:
    """The envelope's payload parsed as ``model``; errors name ``payload.<field>``."""
    try:
        return model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise invalid_from_validation(exc, prefix=("payload",)) from exc


def reverify(session: Session, stored: StoredEnvelope) -> None:
    """Check a stored envelope again, against every key the node ever had (audits)."""
    envelope = Envelope.model_validate(stored.body)
    keys = node_keys.history(session, stored.node_id)
    verify_envelope(envelope, keys, now=envelope.timestamp)
