"""Web-console sign-in: passwords (Argon2id) and console sessions behind a cookie.

A user signs in with one of its API tokens or, once it has set one, its name and password.
The session cookie carries a random secret; the hub stores only its SHA-256, the user, a CSRF
token for the session's forms and when it ends (``SESSION_HOURS`` after sign-in, or at
sign-out). Every sign-in, failed sign-in and password change is on the audit ledger.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import OrgKind, PrincipalKind, Role
from healthspace.core.errors import Forbidden, InvalidInput
from healthspace.hub.db.models import ConsoleSession, User
from healthspace.hub.principal import Principal
from healthspace.hub.services import audit
from healthspace.hub.services.tokens import authenticate

SESSION_HOURS = 12
PASSWORD_MIN = 10
PASSWORD_MAX = 200
_HASHER = PasswordHasher()  # Argon2id, the library's (RFC 9106 low-memory) parameters
# Verified against when the name is unknown, so both failures take the same time.
_DUMMY = _HASHER.hash("not a password of anyone")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def user_principal(user: User) -> Principal:
    return Principal(kind=PrincipalKind.USER, id=user.id, name=user.name, org_id=user.org_id,
                     org=user.org.name, org_kind=OrgKind(user.org.kind), role=Role(user.role))


def set_password(session: Session, clock: Clock, principal: Principal, user_name: str,
                 password: str) -> None:
    """A user sets its own password; an operator may set anyone's."""
    if not principal.is_operator and user_name != principal.name:
        raise Forbidden("only an operator may set another user's password", field="user")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidInput(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters",
                           field="password")
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise InvalidInput(f"unknown user {user_name!r}", field="user")
    user.password_hash = _HASHER.hash(password)
    audit.queue(session, principal.name, "user.password_set", f"user:{user.name}", {})
    session.commit()


@dataclass(frozen=True)
class SignedIn:
    secret: str  # the cookie value; shown once, stored only as its hash
    csrf: str
    principal: Principal


def _open(session: Session, clock: Clock, user: User, how: str) -> SignedIn:
    now = clock.now()
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    session.add(ConsoleSession(secret_hash=_digest(secret), user_id=user.id, csrf=csrf,
                               created_at=now, expires_at=now + timedelta(hours=SESSION_HOURS)))
    audit.queue(session, user.name, "console.sign_in", f"user:{user.name}", {"with": how})
    session.commit()
    return SignedIn(secret, csrf, user_principal(user))


def sign_in_password(session: Session, clock: Clock, name: str,
                     password: str) -> SignedIn | None:
    user = session.scalar(select(User).where(User.name == name))
    try:
        _HASHER.verify(user.password_hash if user and user.password_hash else _DUMMY, password)
        ok = user is not None and user.password_hash is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        audit.queue(session, name[:64] or "-", "console.sign_in_failed", f"user:{name[:64]}",
                    {"with": "password"})
        session.commit()
        return None
    return _open(session, clock, user, "password")


def sign_in_token(session: Session, clock: Clock, token: str) -> SignedIn | None:
    principal = authenticate(session, token.strip())
    if principal is None or principal.kind != PrincipalKind.USER:
        audit.queue(session, "-", "console.sign_in_failed", "user:-", {"with": "token"})
        session.commit()
        return None
    user = session.get(User, principal.id)
    assert user is not None
    return _open(session, clock, user, "token")


def resolve(session: Session, clock: Clock, secret: str | None) -> tuple[Principal, str] | None:
    """The principal and CSRF token of a live console session, or None."""
    if not secret:
        return None
    row = session.scalar(select(ConsoleSession).where(
        ConsoleSession.secret_hash == _digest(secret), ConsoleSession.ended_at.is_(None)))
    if row is None or row.expires_at <= clock.now():
        return None
    user = session.get(User, row.user_id)
    return (user_principal(user), row.csrf) if user is not None else None


def sign_out(session: Session, clock: Clock, secret: str | None) -> None:
    if not secret:
        return
    session.execute(update(ConsoleSession).where(
        ConsoleSession.secret_hash == _digest(secret), ConsoleSession.ended_at.is_(None)
    ).values(ended_at=clock.now()))
    session.commit()
