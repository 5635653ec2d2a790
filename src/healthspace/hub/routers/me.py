"""Who am I: the calling principal."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from healthspace.core.models import Me
from healthspace.hub.auth import require_any
from healthspace.hub.principal import Principal

router = APIRouter(tags=["identity"])


@router.get("/me", response_model=Me)
def me(principal: Principal = Depends(require_any())) -> Me:
    return principal.me()
