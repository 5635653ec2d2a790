"""The catalog: nodes and what their datasets publish (shape, quality, policy, prices)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from healthspace.hub.console.web import Viewer, page, render
from healthspace.hub.db.models import Node
from healthspace.hub.deps import get_hub
from healthspace.hub.services import nodes

router = APIRouter()


@router.get("/catalog", response_class=HTMLResponse)
def catalog(request: Request, viewer: Viewer = Depends(page())) -> HTMLResponse:
    hub = get_hub(request)
    with hub.sessions() as session:
        rows = nodes.list_nodes(session, limit=500, offset=0)
        policies = {n.name: n.policy or {} for n in session.scalars(select(Node))}
    return render(request, viewer, "catalog.html", title=viewer.t("Catalog"), rows=rows,
                  policies=policies)
