"""Signing keys: node key rotation and the hub key nodes pin."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from healthspace.core.envelope import Envelope
from healthspace.hub.auth import require_any, require_node
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.schemas import HubKeyView, KeyRotated
from healthspace.hub.services import hub_keys, nodes

router = APIRouter(tags=["keys"])


@router.post("/node/key", response_model=KeyRotated)
def rotate_node_key(
    envelope: Envelope,
    principal: Principal = Depends(require_node()),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> KeyRotated:
    """An Envelope(kind="key.rotate") signed with the current key, payload a rotation statement."""
    return nodes.rotate_key(session, hub.clock, principal.id, envelope)


@router.get("/hub/key", response_model=HubKeyView)
def hub_key(
    principal: Principal = Depends(require_any()),
    session: Session = Depends(get_session),
) -> HubKeyView:
    """The hub's current public key and the rotation statements leading to it, oldest first."""
    return HubKeyView.model_validate(hub_keys.public_info(session))
