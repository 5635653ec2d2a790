"""Organisations and users (administration)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.core.models import OrgCreate, OrgView, UserCreate, UserView
from healthspace.hub.auth import require
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import Page, page
from healthspace.hub.services import directory

router = APIRouter(tags=["administration"])


@router.post("/orgs", response_model=OrgView, status_code=status.HTTP_201_CREATED)
def create_org(
    spec: OrgCreate,
    principal: Principal = Depends(require(Role.OPERATOR)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> OrgView:
    return directory.create_org(session, hub.clock, spec)


@router.get("/orgs", response_model=list[OrgView])
def list_orgs(
    principal: Principal = Depends(require(Role.OPERATOR, Role.AUDITOR)),
    session: Session = Depends(get_session),
    p: Page = Depends(page),
) -> list[OrgView]:
    return directory.list_orgs(session, limit=p.limit, offset=p.offset)


@router.post("/users", response_model=UserView, status_code=status.HTTP_201_CREATED)
def create_user(
    spec: UserCreate,
    principal: Principal = Depends(
        require(
            Role.OPERATOR,
            Role.DATA_HOLDER_ADMIN,
            note="data_holder_admin: own organisation only, no operators",
        )
    ),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> UserView:
    return directory.create_user(session, hub.clock, principal, spec)


@router.get("/users", response_model=list[UserView])
def list_users(
    principal: Principal = Depends(require(Role.OPERATOR, Role.AUDITOR)),
    session: Session = Depends(get_session),
    p: Page = Depends(page),
) -> list[UserView]:
    return directory.list_users(session, limit=p.limit, offset=p.offset)
