"""Console pages, one module per area; ``ROUTERS`` lists them for mounting (one line each)."""

from __future__ import annotations

from fastapi import APIRouter

from healthspace.hub.console.pages import approvals as _approvals
from healthspace.hub.console.pages import catalog as _catalog
from healthspace.hub.console.pages import home as _home
from healthspace.hub.console.pages import studies as _studies

ROUTERS: tuple[APIRouter, ...] = (
    _home.router,
    _studies.router,
    _approvals.router,
    _catalog.router,
)
