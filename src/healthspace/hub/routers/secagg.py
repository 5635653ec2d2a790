"""Nodes keep a stock of signed one-time keys at the hub for secure-aggregation sessions."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from healthspace.core.envelope import Envelope
from healthspace.hub.auth import require_node
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.services import secagg
from healthspace.hub.services.secagg import PrekeyStock

router = APIRouter(prefix="/node/secagg", tags=["node"])


@router.get("/prekeys", response_model=PrekeyStock)
def prekey_stock(
    principal: Principal = Depends(require_node()),
    session: Session = Depends(get_session),
) -> PrekeyStock:
    """How many of this node's prekeys are still unassigned."""
    return secagg.stock(session, principal.id)


@router.post("/prekeys", response_model=PrekeyStock)
def upload_prekeys(
    envelope: Envelope,
    principal: Principal = Depends(require_node()),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> PrekeyStock:
    """An Envelope(kind="secagg.prekeys", payload={"prekeys": [Prekey, …]})."""
    return secagg.upload(session, hub.clock, principal.id, envelope)
