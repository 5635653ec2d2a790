"""The catalog: nodes and what their datasets publish — shape, data quality, the usage policy
as the policy engine reads it (approval mode, previews, budgets, releases), prices and
service levels, and when each node was last seen — and the specialty-disease registries with
each node's rounded size and last refresh."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from healthspace.core.errors import InvalidInput
from healthspace.core.models import NodeView
from healthspace.governance.policy import UsagePolicy, as_utc, load_policy, secure_required
from healthspace.hub.console.web import Viewer, page, render
from healthspace.hub.db.models import nodes_with_documents
from healthspace.hub.deps import get_hub
from healthspace.hub.services import nodes, registries
from healthspace.hub.settings import MAX_WAIT_SECONDS

router = APIRouter()
# A node long-polls (each poll marks it seen) at most MAX_WAIT_SECONDS apart, so one unseen
# for well over that is not polling now.
ONLINE_WITHIN = timedelta(seconds=2 * MAX_WAIT_SECONDS + 30)
PRICE_LINES = ("per_study", "per_person", "per_compute_second", "per_epsilon", "per_preview")


@dataclass(frozen=True)
class Entry:
    """One dataset as the catalog page shows it."""

    node: NodeView
    online: bool
    policy: UsagePolicy | None  # None: no policy published (or one this hub cannot read)
    quality: dict[str, Any] | None

    @property
    def score(self) -> float | None:
        return None if self.quality is None else self.quality.get("score")

    @property
    def checked_at(self) -> datetime | None:
        """When the node last assessed its data quality (the summary carries ISO text)."""
        raw = (self.quality or {}).get("checked_at")
        try:
            return datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
        except ValueError:
            return None

    @property
    def secure(self) -> bool | None:
        return None if self.policy is None else secure_required(self.policy)

    @property
    def prices(self) -> list[tuple[str, float]]:
        found = self.policy.price_list if self.policy is not None else None
        return [(line, getattr(found, line)) for line in PRICE_LINES
                if found is not None and getattr(found, line)]

    @property
    def purpose_rates(self) -> dict[str, float]:
        found = self.policy.price_list if self.policy is not None else None
        return dict(found.purpose_rates) if found is not None else {}


def _policy(raw: dict[str, Any] | None) -> UsagePolicy | None:
    if not raw:
        return None
    try:
        return load_policy(raw)
    except InvalidInput:
        return None


def entries(rows: list[NodeView], policies: dict[str, dict[str, Any] | None],
            now: datetime) -> list[Entry]:
    out = []
    for row in rows:
        seen = row.last_seen_at
        out.append(Entry(node=row, online=seen is not None
                         and as_utc(now) - as_utc(seen) <= ONLINE_WITHIN,
                         policy=_policy(policies.get(row.name)),
                         quality=row.catalog.quality if row.catalog else None))
    return out


@router.get("/catalog", response_class=HTMLResponse)
def catalog(request: Request, q: str = Query("", max_length=100),
            viewer: Viewer = Depends(page())) -> HTMLResponse:
    hub = get_hub(request)
    with hub.sessions() as session:
        rows = nodes.list_nodes(session, limit=500, offset=0)
        policies = {n.name: n.policy for n in session.scalars(nodes_with_documents())}
        # Specialty-disease registries: each node's rounded size and last refresh.
        kept = (registries.list_registries(session, viewer.principal)
                if viewer.principal is not None else [])
    found = entries(rows, policies, hub.clock.now())
    wanted = q.strip().lower()
    if wanted:
        found = [e for e in found if wanted in e.node.name.lower()
                 or wanted in e.node.org.lower()]
    return render(request, viewer, "catalog.html", title=viewer.t("Catalog"), entries=found,
                  q=q.strip(), total=len(rows), currency=hub.settings.currency,
                  registries=kept)
