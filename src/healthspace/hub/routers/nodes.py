"""Node enrolment, the catalogue consumers browse, and signed catalogue / policy publication."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.core.envelope import Envelope
from healthspace.core.models import NodeEnroll, NodeEnrolled, NodeView
from healthspace.hub.auth import require, require_node, require_user
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import Page, page
from healthspace.hub.schemas import PolicyPublished
from healthspace.hub.services import checkpoints, nodes, policies

router = APIRouter(tags=["nodes"])


@router.post(
    "/nodes",
    response_model=NodeEnrolled,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": NodeEnrolled, "description": "already enrolled; token rotated"}},
)
def enrol_node(
    spec: NodeEnroll,
    response: Response,
    principal: Principal = Depends(
        require(Role.OPERATOR, Role.DATA_HOLDER_ADMIN, note="data_holder_admin: own organisation")
    ),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> NodeEnrolled:
    enrolled = nodes.enrol(session, hub.clock, principal, spec)
    if not enrolled.created:
        response.status_code = status.HTTP_200_OK
    return enrolled


@router.get("/nodes", response_model=list[NodeView])
def list_nodes(
    principal: Principal = Depends(require_user()),
    session: Session = Depends(get_session),
    p: Page = Depends(page),
) -> list[NodeView]:
    return nodes.list_nodes(session, limit=p.limit, offset=p.offset)


@router.put("/node/catalog", response_model=NodeView)
def publish_catalog(
    envelope: Envelope,
    principal: Principal = Depends(require_node()),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> NodeView:
    """An Envelope(kind="catalog", payload=Catalog); the first one may register the node key."""
    return nodes.publish_catalog(session, hub.clock, principal.id, envelope)


@router.put("/node/policy", response_model=PolicyPublished)
def publish_policy(
    envelope: Envelope,
    principal: Principal = Depends(require_node()),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> PolicyPublished:
    """An Envelope(kind="policy", payload={"policy": UsagePolicy}): the hub's pre-check copy."""
    return policies.publish(session, hub.clock, principal.id, envelope)


@router.put("/node/checkpoint", response_model=dict[str, int])
def publish_checkpoint(
    envelope: Envelope,
    principal: Principal = Depends(require_node()),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> dict[str, int]:
    """An Envelope(kind="ledger.checkpoint", payload=the node ledger's signed tree head)."""
    return checkpoints.publish(session, hub.clock, principal.id, envelope)
