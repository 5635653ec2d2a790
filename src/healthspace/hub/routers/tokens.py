"""Token issuance for users (node tokens come from enrolment)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status
from sqlalchemy.orm import Session

from healthspace.core.models import TokenIssue, TokenView
from healthspace.hub.auth import require_user
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.services import tokens

router = APIRouter(tags=["identity"])


@router.post("/tokens", response_model=TokenView, status_code=status.HTTP_201_CREATED)
def issue_token(
    spec: TokenIssue,
    principal: Principal = Depends(require_user(note="non-operators: only for themselves")),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> TokenView:
    return tokens.issue_for_user(session, hub.clock, principal, spec)
