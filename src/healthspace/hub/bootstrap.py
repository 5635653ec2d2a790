"""First start of a hub (schema, signing key, operator, first token) and hub key rotation."""

from __future__ import annotations

from nacl.signing import SigningKey
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from healthspace.core.clock import Clock, SystemClock
from healthspace.core.enums import OrgKind, Role
from healthspace.core.errors import Conflict
from healthspace.hub.db.models import HubKey, Organisation, User
from healthspace.hub.db.session import make_engine, make_sessionmaker, upgrade
from healthspace.hub.services import audit, hub_keys, tokens
from healthspace.hub.services.audit import AuditTrail

OPERATOR = "operator"


def init_hub(db_url: str, clock: Clock | None = None) -> str:
    """Initialise the hub at ``db_url`` and return the first operator token (shown only once).

    Raises Conflict if the hub is already initialised; the schema upgrade itself is idempotent.
    """
    clock = clock or SystemClock()
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = _audited_sessions(engine, clock)
    try:
        with sessions() as session:
            if session.scalar(select(HubKey.id).limit(1)) is not None:
                raise Conflict("the hub is already initialised", field="db_url")
            now = clock.now()
            session.add(hub_keys.new_key_row(SigningKey.generate(), clock))
            org = Organisation(
                name=OPERATOR, kind=OrgKind.OPERATOR, display_name="Space operator", created_at=now
            )
            user = User(name=OPERATOR, org=org, role=Role.OPERATOR, created_at=now)
            session.add_all([org, user])
            session.flush()
            secret = tokens.issue(session, clock, user_id=user.id, label="bootstrap")
            audit.queue(session, OPERATOR, "hub.init", "hub", {"operator": OPERATOR})
            session.commit()
            return secret
    finally:
        engine.dispose()


def rotate_hub_key(db_url: str, clock: Clock | None = None) -> dict[str, str]:
    """Replace the hub's signing key; returns the rotation statement (old vouches for new).

    The old key stays in ``hub_keys`` (retired) so signatures it made still verify; nodes
    follow the statement from ``GET /api/v1/hub/key`` to pin the new key. A running hub picks
    the new key up at its next signature.
    """
    upgrade(db_url)
    engine = make_engine(db_url)
    clock = clock or SystemClock()
    sessions = _audited_sessions(engine, clock)
    try:
        with sessions() as session:
            return hub_keys.rotate(session, clock)
    finally:
        engine.dispose()


def _audited_sessions(engine: Engine, clock: Clock) -> sessionmaker[Session]:
    """Sessions whose commits append their queued audit entries, as in the running hub."""
    sessions = make_sessionmaker(engine)

    def signing_key() -> SigningKey:
        with sessions() as session:
            return hub_keys.signing_key(session)

    AuditTrail(engine, signing_key, clock, synchronous=True).attach(sessions)
    return sessions
