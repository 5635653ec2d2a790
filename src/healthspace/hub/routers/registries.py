"""Specialty-disease registries: register / re-version, read, and nodes' signed status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.core.envelope import Envelope
from healthspace.core.models import REGISTRY_NAME_PATTERN
from healthspace.core.registry_defs import (
    RegistryList,
    RegistryReportAck,
    RegistrySpec,
    RegistryView,
)
from healthspace.hub.auth import require, require_any, require_node
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import Page, page
from healthspace.hub.services import registries

router = APIRouter(tags=["registries"])

VISIBILITY = "users: every registry; node: those it takes part in, its own status only"
Name = Annotated[str, Path(pattern=REGISTRY_NAME_PATTERN, description="the registry's name")]


@router.post(
    "/registries",
    response_model=RegistryView,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": RegistryView, "description": "unchanged: the current version"}},
)
def register_registry(
    spec: RegistrySpec,
    response: Response,
    principal: Principal = Depends(require(Role.OPERATOR)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> RegistryView:
    """A new registry (version 1) or, when its definition changed, its next version."""
    view, created = registries.register(session, hub.clock, principal, spec)
    if not created:
        response.status_code = status.HTTP_200_OK
    return view


@router.get("/registries", response_model=RegistryList)
def list_registries(
    principal: Principal = Depends(require_any(note=VISIBILITY)),
    session: Session = Depends(get_session),
    p: Page = Depends(page),
) -> RegistryList:
    return RegistryList(registries=registries.list_registries(
        session, principal, limit=p.limit, offset=p.offset))


@router.get("/registries/{name}", response_model=RegistryView)
def get_registry(
    name: Name,
    principal: Principal = Depends(require_any(note=VISIBILITY)),
    session: Session = Depends(get_session),
) -> RegistryView:
    return registries.get_registry(session, principal, name)


@router.put("/node/registries", response_model=RegistryReportAck)
def report_registries(
    envelope: Envelope,
    principal: Principal = Depends(require_node()),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> RegistryReportAck:
    """An Envelope(kind="registry.status", payload=RegistryReport) after each refresh."""
    return registries.report(session, hub.clock, principal.id, envelope)
