"""The hub's own Ed25519 key: the active signing key, its public history, and rotation."""

from __future__ import annotations

from typing import Any

from nacl.encoding import HexEncoder
from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.envelope import rotation_statement
from healthspace.core.errors import NotFound
from healthspace.hub.db.models import HubKey
from healthspace.hub.services import audit

_ACTIVE = select(HubKey).where(HubKey.retired_at.is_(None)).order_by(HubKey.id.desc()).limit(1)


def active_key(session: Session) -> HubKey:
    """The newest unretired hub key."""
    key = session.scalar(_ACTIVE)
    if key is None:
        raise NotFound("the hub has no active signing key; run 'healthspace hub init'")
    return key


def signing_key(session: Session) -> SigningKey:
    return SigningKey(active_key(session).private_key.encode("ascii"), encoder=HexEncoder)


def public_info(session: Session) -> dict[str, Any]:
    """``{"public_key": hex, "rotations": [statement, …]}``, rotations oldest first.

    A node that pinned any earlier key follows the chain of statements to the current one.
    """
    # Filtered here, not in SQL: a JSON column may hold JSON null rather than SQL NULL.
    rotations = [r for r in session.scalars(select(HubKey.rotation).order_by(HubKey.id)) if r]
    return {"public_key": active_key(session).public_key, "rotations": rotations}


def new_key_row(key: SigningKey, clock: Clock, rotation: dict[str, str] | None = None) -> HubKey:
    return HubKey(
        kind="ed25519",
        private_key=key.encode(HexEncoder).decode("ascii"),
        public_key=key.verify_key.encode(HexEncoder).decode("ascii"),
        created_at=clock.now(),
        rotation=rotation,
    )


def rotate(session: Session, clock: Clock) -> dict[str, str]:
    """Create a new hub key vouched for by the current one; the old key is kept, retired."""
    old_row = active_key(session)
    old = SigningKey(old_row.private_key.encode("ascii"), encoder=HexEncoder)
    new = SigningKey.generate()
    now = clock.now()
    statement = rotation_statement(old, new, at=now)
    old_row.retired_at = now
    session.add(new_key_row(new, clock, statement))
    audit.queue(session, "operator", "hub.key_rotate", "hub", statement)
    session.commit()
    return statement
