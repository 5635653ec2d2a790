"""The hub's FastAPI application: routers under /api/v1, error mapping, liveness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import healthspace
from healthspace.core.clock import Clock, SystemClock
from healthspace.core.errors import HealthspaceError, field_path
from healthspace.hub.auth import Permission, permission_table
from healthspace.hub.db.session import make_engine, make_sessionmaker
from healthspace.hub.deps import HubState
from healthspace.hub.notifier import Notifier
from healthspace.hub.routers import directory, me, node_tasks, nodes, studies, tokens
from healthspace.hub.settings import HubSettings

API_PREFIX = "/api/v1"
ROUTERS = (
    me.router,
    directory.router,
    tokens.router,
    nodes.router,
    node_tasks.router,
    studies.router,
)


def api_permissions() -> dict[tuple[str, str], Permission | None]:
    """Who may call each ``(METHOD, /api/v1/...)`` route, as declared beside the endpoints."""
    return permission_table(ROUTERS, API_PREFIX)


def _error(status_code: int, message: str, field: str | None, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    body = {"detail": {"message": message, "field": field}, **extra}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _healthspace_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HealthspaceError)
    return _error(exc.status_code, exc.message, exc.field)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": field_path(e.get("loc", ())),
            "message": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    message = f"{first['field']}: {first['message']}{more}"
    return _error(422, message, first["field"], errors=errors)


def create_app(
    db_url: str, *, clock: Clock | None = None, settings: HubSettings | None = None
) -> FastAPI:
    """The hub app over the store at ``db_url`` (initialise it first with ``init_hub``)."""
    engine = make_engine(db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="healthspace hub",
        version=healthspace.__version__,
        description="Coordinator of the health data space. Every /api/v1 route needs a "
        "bearer token; /healthz is the one unauthenticated route.",
        docs_url="/docs",
        lifespan=lifespan,
    )
    app.state.hub = HubState(
        engine=engine,
        sessions=make_sessionmaker(engine),
        clock=clock or SystemClock(),
        settings=settings or HubSettings(),
        notifier=Notifier(),
    )
    app.add_exception_handler(HealthspaceError, _healthspace_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["liveness"])
    def healthz() -> dict[str, str]:
        """Liveness only — unauthenticated, reveals nothing but that the process answers."""
        return {"status": "ok"}

    return app
