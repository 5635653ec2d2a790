"""Organisations and users: who may take part in the data space."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import Role
from healthspace.core.errors import Conflict, Forbidden, InvalidInput
from healthspace.core.models import OrgCreate, OrgView, UserCreate, UserView
from healthspace.hub.db.models import Organisation, User
from healthspace.hub.principal import Principal
from healthspace.hub.services import audit
from healthspace.hub.services.views import org_view, user_view


def org_by_name(session: Session, name: str, *, field: str = "org") -> Organisation:
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None:
        raise InvalidInput(f"unknown organisation {name!r}", field=field)
    return org


def create_org(session: Session, clock: Clock, spec: OrgCreate) -> OrgView:
    if session.scalar(select(Organisation.id).where(Organisation.name == spec.name)) is not None:
        raise Conflict(f"organisation {spec.name!r} already exists", field="name")
    org = Organisation(
        name=spec.name, kind=spec.kind, display_name=spec.display_name, created_at=clock.now()
    )
    session.add(org)
    audit.queue(session, "operator", "org.create", f"org:{spec.name}",
                spec.model_dump(mode="json"))
    session.commit()
    return org_view(org)


def list_orgs(session: Session, *, limit: int, offset: int) -> list[OrgView]:
    rows = session.scalars(
        select(Organisation).order_by(Organisation.id).limit(limit).offset(offset)
    )
    return [org_view(org) for org in rows]


def create_user(session: Session, clock: Clock, principal: Principal, spec: UserCreate) -> UserView:
    """Operators create anyone; a data-holder admin only non-operators of its own organisation."""
    if not principal.is_operator:
        if spec.org != principal.org:
            raise Forbidden(
                "a data_holder_admin may only create users of its own organisation", field="org"
            )
        if spec.role == Role.OPERATOR:
            raise Forbidden("only an operator may create operators", field="role")
    org = org_by_name(session, spec.org)
    if session.scalar(select(User.id).where(User.name == spec.name)) is not None:
        raise Conflict(f"user {spec.name!r} already exists", field="name")
    user = User(name=spec.name, org_id=org.id, role=spec.role, created_at=clock.now())
    user.org = org
    session.add(user)
    audit.queue(session, principal.name, "user.create", f"user:{spec.name}",
                spec.model_dump(mode="json"))
    session.commit()
    return user_view(user)


def list_users(session: Session, *, limit: int, offset: int) -> list[UserView]:
    rows = session.scalars(select(User).order_by(User.id).limit(limit).offset(offset))
    return [user_view(user) for user in rows]
