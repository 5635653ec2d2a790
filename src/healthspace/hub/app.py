"""The hub's FastAPI application: routers under /api/v1, error mapping, liveness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nacl.signing import SigningKey
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

import healthspace
from healthspace.core.clock import Clock, SystemClock
from healthspace.core.errors import HealthspaceError, field_path
from healthspace.hub.auth import Permission, permission_table
from healthspace.hub.db.session import make_engine, make_sessionmaker
from healthspace.hub.deps import HubState
from healthspace.hub.limits import BodyLimit
from healthspace.hub.metrics import HubMetrics, RequestMetrics
from healthspace.hub.metrics import router as metrics_router
from healthspace.hub.notifier import Notifier
from healthspace.hub.routers import (
    approvals,
    audit,
    billing,
    directory,
    keys,
    kpi,
    me,
    models,
    node_tasks,
    nodes,
    registries,
    secagg,
    studies,
    tokens,
)
from healthspace.hub.services import hub_keys, timeline
from healthspace.hub.services.audit import AuditTrail
from healthspace.hub.services.ledger_check import LedgerCheck
from healthspace.hub.services.sla import SlaSweeper
from healthspace.hub.settings import HubSettings
from healthspace.hub.webhooks import WebhookSender

API_PREFIX = "/api/v1"
ROUTERS = (
    me.router,
    directory.router,
    tokens.router,
    nodes.router,
    node_tasks.router,
    secagg.router,
    keys.router,
    studies.router,
    approvals.router,
    audit.router,
    billing.router,
    kpi.router,
    models.router,
    registries.router,
)


def api_permissions() -> dict[tuple[str, str], Permission | None]:
    """Who may call each ``(METHOD, /api/v1/...)`` route, as declared beside the endpoints."""
    return permission_table(ROUTERS, API_PREFIX)


def other_permissions() -> dict[tuple[str, str], Permission | None]:
    """Who may call each authenticated route outside /api/v1 (today: ``GET /metrics``)."""
    return permission_table((metrics_router,))


def _error(status_code: int, message: str, field: str | None, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    body = {"detail": {"message": message, "field": field}, **extra}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _healthspace_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HealthspaceError)
    return _error(exc.status_code, exc.message, exc.field)


async def _pool_exhausted(_request: Request, exc: Exception) -> JSONResponse:
    """Every database connection stayed busy past the pool's wait: the hub is overloaded,
    not broken — 503 with ``Retry-After``, and the request had no effect."""
    response = _error(503, "the hub is overloaded: no database connection came free in time; "
                      "retry shortly", "database")
    response.headers["Retry-After"] = "2"
    return response


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    """Errors the framework raises itself (no such path 404, wrong method 405, a body that
    cannot be decoded 400) in the hub's error shape, keeping their headers (``Allow``)."""
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, dict) and exc.detail.get("message"):
        detail = exc.detail
    else:
        message = str(exc.detail or "") or HTTPStatus(exc.status_code).phrase
        detail = {"message": message, "field": "body" if exc.status_code == 400 else None}
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)


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


def _webhooks(
    sessions: sessionmaker[Session], settings: HubSettings, signing_key: Callable[[], SigningKey]
) -> WebhookSender:
    """The webhook sender, fed by one after-commit interceptor (never by scattered calls):
    committed study status changes are sent, rolled-back ones dropped."""
    sender = WebhookSender(settings.webhooks, signing_key, timeout=settings.webhook_timeout)

    def after_commit(session: Session) -> None:
        for change in timeline.committed_changes(session):
            sender.send(change)

    def after_rollback(session: Session) -> None:
        timeline.discard_changes(session)

    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_rollback", after_rollback)
    return sender


def create_app(
    db_url: str, *, clock: Clock | None = None, settings: HubSettings | None = None
) -> FastAPI:
    """The hub app over the store at ``db_url`` (initialise it first with ``init_hub``)."""
    engine = make_engine(db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub: HubState = _app.state.hub
        sweeper = SlaSweeper(hub.sessions, hub.clock, hub.settings.sla_sweep_seconds)
        sweeper.start()
        yield
        sweeper.stop()
        hub.audit.flush()  # what was committed reaches the ledger before exit
        engine.dispose()

    app = FastAPI(
        title="healthspace hub",
        version=healthspace.__version__,
        description="Coordinator of the health data space. Every /api/v1 route needs a "
        "bearer token, as does /metrics (Prometheus); /healthz is the one unauthenticated route.",
        docs_url="/docs",
        lifespan=lifespan,
    )
    settings = settings or HubSettings()
    sessions = make_sessionmaker(engine)
    clock = clock or SystemClock()

    def signing_key() -> SigningKey:  # read per use: a rotated hub key applies at once
        with sessions() as session:
            return hub_keys.signing_key(session)

    trail = AuditTrail(engine, signing_key, clock)
    trail.attach(sessions)
    app.state.hub = HubState(
        engine=engine,
        sessions=sessions,
        clock=clock,
        settings=settings,
        notifier=Notifier(),
        webhooks=_webhooks(sessions, settings, signing_key),
        audit=trail,
        ledger_check=LedgerCheck(settings.ledger_full_check_seconds),
    )
    app.add_exception_handler(HealthspaceError, _healthspace_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _pool_exhausted)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)

    from healthspace.hub import console

    console.install(app)

    app.include_router(metrics_router)
    app.state.metrics = HubMetrics(engine, clock)
    # Outermost, so the latency covers every other middleware (console headers, body limit).
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)

    @app.get("/healthz", tags=["liveness"])
    def healthz() -> dict[str, str]:
        """Liveness only — unauthenticated, reveals nothing but that the process answers."""
        return {"status": "ok"}

    return app
