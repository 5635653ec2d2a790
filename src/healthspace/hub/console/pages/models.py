"""Models: the registry the viewer may see, one model card per version, and the weights
download where the contributing nodes' policies release them to this viewer."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from healthspace.core.errors import HealthspaceError
from healthspace.core.models import StudyView
from healthspace.hub.console.web import Viewer, page, render
from healthspace.hub.deps import get_hub
from healthspace.hub.services import models, studies

router = APIRouter()
SCALARS = (int, float)


def _failed(request: Request, viewer: Viewer, exc: HealthspaceError,
            model_id: int) -> HTMLResponse:
    return render(request, viewer, "error.html", status_code=exc.status_code,
                  title=viewer.t("Model {id}", id=model_id), message=exc.message)


@router.get("/models", response_class=HTMLResponse)
def model_list(request: Request, name: str | None = None,
               viewer: Viewer = Depends(page())) -> HTMLResponse:
    hub = get_hub(request)
    assert viewer.principal is not None
    chosen = name.strip() if name and name.strip() else None
    with hub.sessions() as session:
        rows = models.list_models(session, viewer.principal, chosen, limit=500, offset=0)
    return render(request, viewer, "models.html", title=viewer.t("Models"), rows=rows,
                  name=chosen)


def _score_studies(request: Request, viewer: Viewer, model_id: int) -> list[StudyView]:
    """The score studies of this model that the viewer may see (the studies' own rules)."""
    hub = get_hub(request)
    assert viewer.principal is not None
    with hub.sessions() as session:
        visible = studies.list_studies(session, hub.clock, viewer.principal, status=None,
                                       limit=500, offset=0)
    return [s for s in visible if s.analysis == models.SCORING
            and s.params.get("model_id") == model_id]


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_card(model_id: int, request: Request,
               viewer: Viewer = Depends(page())) -> HTMLResponse:
    hub = get_hub(request)
    assert viewer.principal is not None
    try:
        with hub.sessions() as session:
            model = models.get_model(session, viewer.principal, model_id)
    except HealthspaceError as exc:
        return _failed(request, viewer, exc, model_id)
    # A hint for the button only; the download route asks the registry, which decides
    # (and audits) exactly as the API does.
    may_download = model.release == "download" and model.owner == viewer.principal.org
    metrics = {k: v for k, v in model.metrics.items()
               if isinstance(v, SCALARS) and not isinstance(v, bool)}
    return render(request, viewer, "models_card.html",
                  title=viewer.t("Model {name} v{version}", name=model.name,
                                 version=model.version),
                  model=model, metrics=metrics, may_download=may_download,
                  scored=_score_studies(request, viewer, model_id),
                  dataset_json=json.dumps(model.dataset, indent=2, ensure_ascii=False)
                  if model.dataset else None)


@router.get("/models/{model_id}/weights", response_model=None)
def model_weights(model_id: int, request: Request,
                  viewer: Viewer = Depends(page())) -> Response:
    """The model package as the API gives it, through the same registry call (which records
    ``model.download`` or ``model.download_refused`` on the ledger)."""
    hub = get_hub(request)
    assert viewer.principal is not None
    try:
        with hub.sessions() as session:
            package = models.download(session, viewer.principal, model_id)
    except HealthspaceError as exc:
        return _failed(request, viewer, exc, model_id)
    body = package.model_dump_json(indent=2)
    filename = f"{package.name}-v{package.version}.json"
    return Response(body, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
