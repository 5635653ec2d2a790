"""Prometheus metrics of one hub app: request latency, plus state read from the database.

Each app owns a :class:`CollectorRegistry` (several hubs may live in one process, as in
tests). Request latency is observed by an ASGI middleware, labelled by the *route template*
(``/api/v1/studies/{study_id}``, never the raw path) so label cardinality stays bounded.
Studies, tasks, nodes and the ledger are read at scrape time with a handful of indexed
aggregate queries, so the numbers are always the database's, even with several hub workers.
"""

from __future__ import annotations

import logging
import platform
import re
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import healthspace
from healthspace.core.clock import Clock
from healthspace.core.enums import Role, StudyStatus, TaskStatus
from healthspace.core.logs import request_started
from healthspace.hub.auth import require
from healthspace.hub.db.models import Node, Study, Task
from healthspace.ledger.sqla_store import LEDGER_CHECKPOINTS, LEDGER_ENTRIES

log = logging.getLogger(__name__)

PREFIX = "healthspace_hub"
# Long-polls (GET /node/tasks/next?wait=…, studies ?wait=…) last up to a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNMATCHED = "unmatched"  # requests no route matched (404s): one label value
# Any other request method a client invents is counted as "OTHER" (bounded label values).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class DatabaseCollector(Collector):
    """Gauges computed from the hub database on every scrape."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_database_up",
                               "1 if the last scrape could read the hub database, else 0")
        try:
            families = self._read()
        except SQLAlchemyError as exc:  # a scrape must still answer: report the outage
            log.warning("metrics scrape could not read the database: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        with self.engine.connect() as conn:
            studies = dict(conn.execute(
                select(Study.status, func.count()).group_by(Study.status)).all())
            tasks = dict(conn.execute(
                select(Task.status, func.count()).group_by(Task.status)).all())
            nodes = list(conn.execute(select(Node.name, Node.last_seen_at)).all())
            # seq runs 1, 2, 3, … without gaps, so MAX(seq) is the size (an index lookup).
            entries = conn.execute(select(func.max(LEDGER_ENTRIES.c.seq))).scalar_one()
            checkpoints = conn.execute(
                select(func.count()).select_from(LEDGER_CHECKPOINTS)).scalar_one()
        return [
            _by_state(f"{PREFIX}_studies", "Studies by state", studies,
                      [s.value for s in StudyStatus]),
            _by_state(f"{PREFIX}_tasks", "Per-node tasks by state", tasks,
                      [s.value for s in TaskStatus]),
            *self._nodes(nodes),
            _gauge(f"{PREFIX}_ledger_entries", "Entries in the hub's audit ledger",
                   int(entries or 0)),
            _gauge(f"{PREFIX}_ledger_checkpoints",
                   "Signed checkpoints (tree heads) of the hub's audit ledger", int(checkpoints)),
        ]

    def _nodes(self, rows: list[Any]) -> list[Metric]:
        now = self.clock.now()
        seen = GaugeMetricFamily(
            f"{PREFIX}_node_last_seen_seconds",
            "Seconds since each node last called the hub (absent: never seen)",
            labels=["node"])
        for name, last_seen in sorted(rows, key=lambda row: str(row[0])):
            if last_seen is not None:
                seen.add_metric([name], max(0.0, (now - last_seen).total_seconds()))
        return [_gauge(f"{PREFIX}_nodes", "Enrolled nodes", len(rows)), seen]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _by_state(name: str, documentation: str, counts: dict[Any, Any],
              states: list[str]) -> GaugeMetricFamily:
    """One sample per known state (zeros included, so rates and alerts see every series)."""
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state in [*states, *sorted(set(map(str, counts)) - set(states))]:
        family.add_metric([state], int(counts.get(state, 0)))
    return family


class HubMetrics:
    """The registry of one hub app and the request-latency histogram it feeds."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "HTTP request latency by method, route template and status class",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        info = Info(f"{PREFIX}_build", "Version of the running hub", registry=self.registry)
        info.info({"version": healthspace.__version__, "python": platform.python_version()})
        self.registry.register(DatabaseCollector(engine, clock))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        self.latency.labels(method, route, f"{status // 100}xx").observe(seconds)


@lru_cache(maxsize=1024)
def _unanchored(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.removeprefix("^"))


def route_template(scope: Scope) -> str:
    """The matched route's full path template (``/api/v1/studies/{study_id}``), else UNMATCHED.

    The router leaves the matched route on the scope; its template lacks the prefix it was
    included under, which is the literal part of the path before the route's own pattern.
    A mounted app (the console's static files) is labelled by its mount point.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    regex = getattr(route, "path_regex", None)
    if template and regex is not None:
        path = str(scope.get("path", ""))
        found = _unanchored(regex.pattern).search(path)
        return (path[: found.start()] if found else "") + str(template)
    if "app_root_path" in scope and scope.get("root_path"):
        return f"{scope['root_path']}/{{path}}"
    return UNMATCHED


class RequestMetrics:
    """ASGI middleware: times every HTTP request and marks its start for the access log."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        token = request_started.set(started)
        status = 500  # an exception before the response starts is a server error

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            request_started.reset(token)
            self.metrics.observe(scope.get("method", "GET"), route_template(scope), status,
                                 time.perf_counter() - started)


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require(
        Role.OPERATOR, Role.AUDITOR,
        note="for Prometheus; a dedicated auditor-role user gives a token that can read only"))],
)
def scrape(request: Request) -> Response:
    """Prometheus text exposition of this hub's metrics (docs/operations.md#metrics)."""
    metrics: HubMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
