"""The hub's audit ledger, read-only, for auditors and operators: entries, head, proofs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from healthspace.core.enums import Role
from healthspace.core.errors import NotFound
from healthspace.hub.auth import require
from healthspace.hub.deps import HubState, hub_state
from healthspace.hub.principal import Principal
from healthspace.hub.routers.common import MAX_ID, RowId

router = APIRouter(prefix="/audit", tags=["audit"])
READERS = (Role.OPERATOR, Role.AUDITOR)


@router.get("/entries", response_model=list[dict[str, Any]])
def entries(
    start: int = Query(1, ge=1, le=MAX_ID, description="first sequence number"),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(require(*READERS)),
    hub: HubState = Depends(hub_state),
) -> list[dict[str, Any]]:
    """Ledger entries from ``start`` in sequence order (hashes and digests; no payloads)."""
    hub.audit.flush()
    rows = hub.audit.store.entries(start, start + limit)
    return [entry.to_dict() for entry in rows]


@router.get("/head", response_model=dict[str, Any])
def head(
    principal: Principal = Depends(require(*READERS)),
    hub: HubState = Depends(hub_state),
) -> dict[str, Any]:
    """The latest signed checkpoint (an RFC 6962 tree head signed by the hub key)."""
    hub.audit.flush()
    cp = hub.audit.store.latest_checkpoint()
    if cp is None:
        raise NotFound("the ledger has no checkpoint yet")
    return cp.to_dict()


@router.get("/proof/{seq}", response_model=dict[str, Any])
async def proof(
    seq: RowId,
    principal: Principal = Depends(require(*READERS)),
    hub: HubState = Depends(hub_state),
) -> dict[str, Any]:
    """An inclusion proof of entry ``seq`` against the latest signed checkpoint."""
    try:
        found = await run_in_threadpool(hub.audit.proof, seq)
    except LookupError as exc:
        raise NotFound(str(exc), field="seq") from exc
    return found.to_dict()
