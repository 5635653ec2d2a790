"""Console pages, one module per area; ``ROUTERS`` lists them for mounting (one line each)."""

from __future__ import annotations

from fastapi import APIRouter

from healthspace.hub.console.pages import approvals as _approvals
from healthspace.hub.console.pages import audit as _audit
from healthspace.hub.console.pages import billing as _billing
from healthspace.hub.console.pages import builder as _builder
from healthspace.hub.console.pages import catalog as _catalog
from healthspace.hub.console.pages import cds as _cds
from healthspace.hub.console.pages import consent as _consent
from healthspace.hub.console.pages import home as _home
from healthspace.hub.console.pages import models as _models
from healthspace.hub.console.pages import studies as _studies

ROUTERS: tuple[APIRouter, ...] = (
    _home.router,
    _builder.router,  # before studies: /studies/new is not /studies/{study_id}
    _studies.router,
    _cds.router,
    _approvals.router,
    _catalog.router,
    _audit.router,
    _consent.router,
    _models.router,
    _billing.router,
)
