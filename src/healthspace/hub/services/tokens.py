"""Bearer tokens: generated once, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import OrgKind, PrincipalKind, Role
from healthspace.core.errors import Forbidden, InvalidInput
from healthspace.core.models import TokenIssue, TokenView
from healthspace.hub.db.models import Node, Organisation, Token, User
from healthspace.hub.principal import Principal
from healthspace.hub.services import audit

PREFIX = "hs_"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def issue(
    session: Session,
    clock: Clock,
    *,
    user_id: int | None = None,
    node_id: int | None = None,
    label: str | None = None,
) -> str:
    """Store the hash of a fresh token for one principal and return the secret (once)."""
    secret = new_secret()
    session.add(
        Token(
            token_hash=hash_token(secret),
            user_id=user_id,
            node_id=node_id,
            label=label,
            created_at=clock.now(),
        )
    )
    return secret


def revoke_node_tokens(session: Session, clock: Clock, node_id: int) -> None:
    session.execute(
        update(Token)
        .where(Token.node_id == node_id, Token.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )


def issue_for_user(
    session: Session, clock: Clock, principal: Principal, spec: TokenIssue
) -> TokenView:
    """Operators issue tokens for anyone; every other user only for itself."""
    if not principal.is_operator and spec.user != principal.name:
        raise Forbidden("only an operator may issue tokens for another user", field="user")
    user = session.scalar(select(User).where(User.name == spec.user))
    if user is None:
        raise InvalidInput(f"unknown user {spec.user!r}", field="user")
    secret = issue(session, clock, user_id=user.id, label=spec.label)
    audit.queue(session, principal.name, "token.issue", f"user:{user.name}",
                {"label": spec.label})
    session.commit()
    return TokenView(token=secret, principal=user.name, kind=PrincipalKind.USER)


# Built once (every request runs it): building and keying a statement costs more CPU than
# SQLite takes to answer it.
_PRINCIPAL = (
    select(Token.user_id, Token.node_id, User.name, User.role, Node.name,
           Organisation.id, Organisation.name, Organisation.kind)
    .outerjoin(User, User.id == Token.user_id)
    .outerjoin(Node, Node.id == Token.node_id)
    .join(Organisation, Organisation.id == func.coalesce(User.org_id, Node.org_id))
    .where(Token.token_hash == bindparam("token_hash"), Token.revoked_at.is_(None))
)


def authenticate(session: Session, secret: str) -> Principal | None:
    """The principal a live (unrevoked) token belongs to, or None: one indexed read, every
    request makes it."""
    row = session.execute(_PRINCIPAL, {"token_hash": hash_token(secret)}).first()
    if row is None:
        return None
    user_id, node_id, user_name, role, node_name, org_id, org_name, org_kind = row
    if user_id is not None:
        return Principal(kind=PrincipalKind.USER, id=user_id, name=user_name, org_id=org_id,
                         org=org_name, org_kind=OrgKind(org_kind), role=Role(role))
    if node_id is None:  # the join found neither a user nor a node: no principal
        return None
    return Principal(kind=PrincipalKind.NODE, id=node_id, name=node_name, org_id=org_id,
                     org=org_name, org_kind=OrgKind(org_kind))
