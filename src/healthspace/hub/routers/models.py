"""The model registry: list and read model cards; release weights as the policies allow."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from healthspace.core.registry_models import ModelList, ModelPackage, ModelView
from healthspace.hub.auth import require_any, require_user
from healthspace.hub.deps import get_session
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import Page, RowId, page
from healthspace.hub.services import models

router = APIRouter(prefix="/models", tags=["models"])

VISIBILITY = ("consumer: its organisation's models; data_holder_admin: models its nodes "
              "trained; operator, auditor: all")
RELEASE = ("node: when every contributing node's model_release is deploy or download; "
           "consumer: its organisation's model, when it is download; others: never")


@router.get("", response_model=ModelList)
def list_models(
    name: str | None = Query(None, max_length=64),
    principal: Principal = Depends(require_user(note=VISIBILITY)),
    session: Session = Depends(get_session),
    p: Page = Depends(page),
) -> ModelList:
    """Registered model versions, newest first (cards and metrics, never weights)."""
    return ModelList(models=models.list_models(session, principal, name, p.limit, p.offset))


@router.get("/{model_id}", response_model=ModelView)
def get_model(
    model_id: RowId,
    principal: Principal = Depends(require_user(note=VISIBILITY)),
    session: Session = Depends(get_session),
) -> ModelView:
    return models.get_model(session, principal, model_id)


@router.get("/{model_id}/weights", response_model=ModelPackage)
def download_weights(
    model_id: RowId,
    principal: Principal = Depends(require_any(note=RELEASE)),
    session: Session = Depends(get_session),
) -> ModelPackage:
    """The model package (architecture, feature preparation, weights); every release and
    refusal is on the audit ledger."""
    return models.download(session, principal, model_id)
