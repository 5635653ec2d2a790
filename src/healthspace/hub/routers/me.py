"""Who am I: the calling principal; setting a console password."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status
from pydantic import Field
from sqlalchemy.orm import Session

from healthspace.core.models import Me, Wire
from healthspace.hub.auth import require_any, require_user
from healthspace.hub.deps import HubState, get_session, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.services import console

router = APIRouter(tags=["identity"])


class PasswordSpec(Wire):
    password: str = Field(min_length=console.PASSWORD_MIN, max_length=console.PASSWORD_MAX,
                          description="for signing in to the web console by name")
    user: str | None = Field(default=None, max_length=64,
                             description="another user's (operators only); default: yours")


@router.get("/me", response_model=Me)
def me(principal: Principal = Depends(require_any())) -> Me:
    return principal.me()


@router.put("/me/password", status_code=status.HTTP_204_NO_CONTENT)
def set_password(
    spec: PasswordSpec,
    principal: Principal = Depends(require_user(note="operator: any user's; others: own")),
    session: Session = Depends(get_session),
    hub: HubState = Depends(hub_state),
) -> Response:
    """Set the password for console sign-in (stored as an Argon2id hash)."""
    console.set_password(session, hub.clock, principal, spec.user or principal.name,
                         spec.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
