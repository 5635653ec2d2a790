"""The consent overview (data-holder admins, operators): the consent tier counts each node
publishes in its catalogue, rounded and disclosure-controlled, and how they changed between
publications. Consent records themselves stay on the node; the hub never sees a person."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.governance.policy import ConsentTier
from healthspace.hub.console.web import Viewer, page, render
from healthspace.hub.db.models import Node, StoredEnvelope, nodes_with_documents
from healthspace.hub.deps import get_hub
from healthspace.hub.principal import Principal

router = APIRouter()
VIEWERS = (Role.DATA_HOLDER_ADMIN, Role.OPERATOR)
TIERS = tuple(t.value for t in ConsentTier)
HISTORY = 200  # catalogue publications read per node (nodes publish only when something changed)
CHANGES = 10  # tier-count changes shown per node


@dataclass
class Publication:
    at: datetime
    tiers: dict[str, int | str]


@dataclass
class NodeConsent:
    node: str
    org: str
    default_tier: str | None
    tiers: dict[str, int | str] | None  # the current catalogue's, None if never published
    published_at: datetime | None  # when the current catalogue reached the hub
    changes: list[Publication] = field(default_factory=list)  # newest first

    @property
    def tier_names(self) -> list[str]:
        return [*TIERS, *sorted(set(self.tiers or {}) - set(TIERS))]


def _own_nodes(session: Session, principal: Principal) -> list[Node]:
    """The viewer's organisation's nodes (every node for an operator), as the approvals inbox
    scopes them."""
    query = nodes_with_documents().order_by(Node.name)
    if not principal.is_operator:
        query = query.where(Node.org_id == principal.org_id)
    return list(session.scalars(query))


def _changes(session: Session, node: Node) -> tuple[datetime | None, list[Publication]]:
    """When the current catalogue arrived, and the publications whose tier counts differ from
    the one before, newest first."""
    rows = session.execute(
        select(StoredEnvelope.received_at, StoredEnvelope.body)
        .where(StoredEnvelope.node_id == node.id, StoredEnvelope.kind == "catalog")
        .order_by(StoredEnvelope.id.desc()).limit(HISTORY)).all()
    published: list[Publication] = []
    for at, body in reversed(rows):
        tiers: Any = (body.get("payload") or {}).get("consent_tiers")
        if isinstance(tiers, dict) and (not published or published[-1].tiers != tiers):
            published.append(Publication(at, tiers))
    return (rows[0][0] if rows else None), published[::-1][:CHANGES]


def overview(session: Session, principal: Principal) -> list[NodeConsent]:
    out = []
    for node in _own_nodes(session, principal):
        published_at, changes = _changes(session, node)
        tiers = (node.catalog or {}).get("consent_tiers")
        out.append(NodeConsent(node.name, node.org.name,
                               (node.policy or {}).get("consent_default_tier"),
                               tiers if isinstance(tiers, dict) else None, published_at,
                               changes))
    return out


@router.get("/consent", response_class=HTMLResponse)
def consent(request: Request, viewer: Viewer = Depends(page(*VIEWERS))) -> HTMLResponse:
    hub = get_hub(request)
    assert viewer.principal is not None
    with hub.sessions() as session:
        rows = overview(session, viewer.principal)
    return render(request, viewer, "consent.html", title=viewer.t("Consent"), rows=rows,
                  tiers=TIERS)
