"""First start of a hub: schema, signing key, operator organisation and user, first token."""

from __future__ import annotations

from nacl.encoding import HexEncoder
from nacl.signing import SigningKey
from sqlalchemy import select

from healthspace.core.clock import Clock, SystemClock
from healthspace.core.enums import OrgKind, Role
from healthspace.core.errors import Conflict
from healthspace.hub.db.models import HubKey, Organisation, User
from healthspace.hub.db.session import make_engine, make_sessionmaker, upgrade
from healthspace.hub.services import tokens

OPERATOR = "operator"


def init_hub(db_url: str, clock: Clock | None = None) -> str:
    """Initialise the hub at ``db_url`` and return the first operator token (shown only once).

    Raises Conflict if the hub is already initialised; the schema upgrade itself is idempotent.
    """
    clock = clock or SystemClock()
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:
            if session.scalar(select(HubKey.id).limit(1)) is not None:
                raise Conflict("the hub is already initialised", field="db_url")
            now = clock.now()
            key = SigningKey.generate()
            session.add(
                HubKey(
                    kind="ed25519",
                    private_key=key.encode(HexEncoder).decode("ascii"),
                    public_key=key.verify_key.encode(HexEncoder).decode("ascii"),
                    created_at=now,
                )
            )
            org = Organisation(
                name=OPERATOR, kind=OrgKind.OPERATOR, display_name="Space operator", created_at=now
            )
            user = User(name=OPERATOR, org=org, role=Role.OPERATOR, created_at=now)
            session.add_all([org, user])
            session.flush()
            secret = tokens.issue(session, clock, user_id=user.id, label="bootstrap")
            session.commit()
            return secret
    finally:
        engine.dispose()
