"""Approvals: data holders approve or reject studies for their organisation's nodes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.hub.auth import require
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.notifier import node_topic, study_topic
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import Page, RowId, page
from healthspace.hub.schemas import ApprovalView, ApproveSpec, RejectSpec
from healthspace.hub.services import approvals
from healthspace.hub.services.admission import ApprovalStatus

router = APIRouter(prefix="/approvals", tags=["approvals"])

OWN_NODES = "data_holder_admin: nodes of its own organisation; operator: any node"
Listed = Literal["pending", "approved", "rejected", "expired"]


@router.get("", response_model=list[ApprovalView])
def list_approvals(
    status_: Listed = Query("pending", alias="status"),
    principal: Principal = Depends(
        require(Role.OPERATOR, Role.DATA_HOLDER_ADMIN, Role.AUDITOR,
                note="data_holder_admin: own organisation's nodes; operator, auditor: all")
    ),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
    p: Page = Depends(page),
) -> list[ApprovalView]:
    return approvals.list_approvals(
        session, hub.clock, principal, ApprovalStatus(status_), limit=p.limit, offset=p.offset
    )


@router.post("/{study_id}/{node}/approve", response_model=ApprovalView)
def approve(
    study_id: RowId,
    node: str,
    spec: ApproveSpec | None = None,
    principal: Principal = Depends(require(Role.OPERATOR, Role.DATA_HOLDER_ADMIN, note=OWN_NODES)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> ApprovalView:
    view, woken = approvals.approve(
        session, hub.clock, hub.settings, principal, study_id, node, spec or ApproveSpec()
    )
    hub.notifier.notify(study_topic(study_id), *(node_topic(n) for n in woken))
    return view


@router.post("/{study_id}/{node}/reject", response_model=ApprovalView)
def reject(
    study_id: RowId,
    node: str,
    spec: RejectSpec,
    principal: Principal = Depends(require(Role.OPERATOR, Role.DATA_HOLDER_ADMIN, note=OWN_NODES)),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> ApprovalView:
    view, woken = approvals.reject(
        session, hub.clock, hub.settings, principal, study_id, node, spec
    )
    hub.notifier.notify(study_topic(study_id), *(node_topic(n) for n in woken))
    return view
