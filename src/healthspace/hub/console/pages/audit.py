"""The audit explorer (auditors, operators): the hub ledger's entries with filters, one entry's
inclusion proof, "verify now", and what the hub can check of each node's ledger on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.enums import Role
from healthspace.hub.console.i18n import Translator
from healthspace.hub.console.web import PREFIX, Viewer, check_csrf, page, render
from healthspace.hub.db.models import HubKey, Node, StoredEnvelope, nodes_with_documents
from healthspace.hub.deps import HubState, get_hub
from healthspace.hub.services import node_keys
from healthspace.hub.services.checkpoints import KIND as CHECKPOINT_KIND
from healthspace.ledger.checkpoint import Checkpoint, verify_checkpoint
from healthspace.ledger.crosscheck import HUB_ACTION, executions
from healthspace.ledger.entry import GENESIS_HASH, Entry, expected_hash
from healthspace.ledger.store import LedgerStore
from healthspace.ledger.verify import VerifyReport, verify

router = APIRouter()
READERS = (Role.AUDITOR, Role.OPERATOR)
LIMIT, MAX_LIMIT = 100, 1000  # as GET /api/v1/audit/entries
TEXT_FIELDS = ("actor", "action", "subject")
FILTER_FIELDS = (*TEXT_FIELDS, "since", "until", "start", "to", "limit")
# Accepted time inputs and their precision: "until" includes the whole minute (day, second).
_MOMENTS = (("%Y-%m-%dT%H:%M:%S", timedelta(seconds=1)), ("%Y-%m-%dT%H:%M", timedelta(minutes=1)),
            ("%Y-%m-%d", timedelta(days=1)))


class BadFilter(ValueError):
    """A filter the viewer typed that does not parse (the message is translated)."""


def _moment(text: str) -> tuple[datetime, timedelta]:
    value = text.strip().replace(" ", "T").removesuffix("Z")
    for fmt, step in _MOMENTS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC), step
        except ValueError:
            continue
    raise ValueError(text)


def entry_time(text: str) -> datetime | None:
    """A stored ledger time (ISO-8601, ``Z``), or None if it was edited into something else."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _like(pattern: str, value: str) -> bool:
    """Exact match, or a prefix match when the pattern ends with ``*``."""
    if not pattern:
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


@dataclass(frozen=True)
class Filters:
    """What the explorer shows: entries ``start..to`` (by seq) matching every given filter."""

    actor: str = ""
    action: str = ""
    subject: str = ""
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    start: int = 1
    to: int | None = None  # inclusive
    limit: int = LIMIT
    raw: dict[str, str] = field(default_factory=dict)  # as typed, to fill the form again

    @property
    def narrowing(self) -> bool:
        return bool(self.actor or self.action or self.subject or self.since or self.until)

    def matches(self, e: Entry) -> bool:
        if not all(_like(getattr(self, name), getattr(e, name)) for name in TEXT_FIELDS):
            return False
        if self.since is None and self.until is None:
            return True
        at = entry_time(e.time)
        return at is not None and (self.since is None or at >= self.since) and (
            self.until is None or at < self.until)

    def link(self, start: int) -> str:
        """The query string of this filter from ``start`` (the next page)."""
        params = {k: v for k, v in self.raw.items() if v and k != "start"}
        return "?" + urlencode({**params, "start": start})


def raw_filters(params: dict[str, str]) -> dict[str, str]:
    return {k: params.get(k, "").strip() for k in FILTER_FIELDS}


# Ledger sequence numbers are 64-bit integers in the store; a larger one names no entry.
MAX_SEQ = 2**63 - 1


def parse_filters(raw: dict[str, str], t: Translator) -> Filters:
    """The typed filter; raises BadFilter naming the field that does not parse."""
    labels = {"start": t("From seq"), "to": t("To seq"), "limit": t("Per page"),
              "since": t("From (UTC)"), "until": t("Until (UTC)")}

    def number(name: str, low: int, high: int | None = None) -> int | None:
        if not raw[name]:
            return None
        try:
            value = int(raw[name])
        except ValueError:
            raise BadFilter(t("{field} must be a whole number.", field=labels[name])) from None
        if high is not None and not low <= value <= high:
            raise BadFilter(t("{field} must be between {low} and {high}.", field=labels[name],
                              low=low, high=high))
        if value < low:
            raise BadFilter(t("{field} must be at least {low}.", field=labels[name], low=low))
        return value

    def moment(name: str) -> tuple[datetime, timedelta] | None:
        try:
            return _moment(raw[name]) if raw[name] else None
        except ValueError:
            raise BadFilter(t("{field} must be a date and time such as 2025-03-01T09:30 "
                              "(UTC).", field=labels[name])) from None

    since, until = moment("since"), moment("until")
    start, to = number("start", 1, MAX_SEQ), number("to", 1, MAX_SEQ)
    limit = number("limit", 1, MAX_LIMIT)
    return Filters(raw["actor"], raw["action"], raw["subject"],
                   since[0] if since else None, until[0] + until[1] if until else None,
                   start or 1, to, limit or LIMIT, raw)


def select_entries(store: LedgerStore, f: Filters) -> tuple[list[Entry], int | None]:
    """One page of matching entries, read as ``GET /api/v1/audit/entries`` reads them, and the
    seq the next page starts at (None if this is the last)."""
    stop = f.to + 1 if f.to is not None else None
    if not f.narrowing:  # exactly the API's window, plus one entry to know if there is more
        stop = min(stop, f.start + f.limit + 1) if stop else f.start + f.limit + 1
    shown: list[Entry] = []
    rows = store.entries(f.start, stop)
    try:
        for e in rows:
            if f.matches(e):
                if len(shown) == f.limit:
                    return shown, e.seq
                shown.append(e)
    finally:  # stop the store's streaming read (and free its connection) at once
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    return shown, None


def hub_keys(session: Session) -> list[tuple[str, datetime, datetime | None]]:
    """Every key the hub ever signed with (public key, created, retired), oldest first."""
    rows = session.execute(select(HubKey.public_key, HubKey.created_at, HubKey.retired_at)
                           .order_by(HubKey.id))
    return [(k, created, retired) for k, created, retired in rows]


def verify_hub(hub: HubState) -> VerifyReport:
    """The KPI route's check (``ledger.verify`` against every stored hub key), full report."""
    hub.audit.flush()
    with hub.sessions() as session:
        keys = [k for k, _, _ in hub_keys(session)]
    return verify(hub.audit.store, keys)


def _page(request: Request, viewer: Viewer, template: str, code: int = 200,
          **context: object) -> HTMLResponse:
    """``render`` plus ``at``: a ledger time (ISO text, as hashed) in the viewer's language."""
    def at(text: str) -> str:
        moment = entry_time(text)
        return viewer.t.when(moment) if moment else text  # an edited time is shown as stored

    return render(request, viewer, template, status_code=code, at=at, **context)


def _explorer(request: Request, viewer: Viewer, f: Filters, *, error: str | None = None,
              report: VerifyReport | None = None, code: int = 200) -> HTMLResponse:
    hub = get_hub(request)
    hub.audit.flush()
    store = hub.audit.store
    rows, next_start = ([], None) if error else select_entries(store, f)
    count = store.count()
    return _page(request, viewer, "audit.html", code,
                 title=viewer.t("Audit ledger"), rows=rows, f=f, error=error, report=report,
                 next_link=f.link(next_start) if next_start else None, count=count,
                 head=store.latest_checkpoint(), newest=f.link(max(1, count - f.limit + 1)))


@router.get("/audit", response_class=HTMLResponse)
def explorer(request: Request, viewer: Viewer = Depends(page(*READERS))) -> HTMLResponse:
    raw = raw_filters(dict(request.query_params))
    try:
        f = parse_filters(raw, viewer.t)
    except BadFilter as exc:
        return _explorer(request, viewer, Filters(raw=raw), error=str(exc), code=422)
    return _explorer(request, viewer, f)


@router.post("/audit/verify", response_class=HTMLResponse)
def verify_now(request: Request, csrf: str = Form(""),
               viewer: Viewer = Depends(page(*READERS))) -> HTMLResponse:
    """Recompute every hash, Merkle root and checkpoint signature (read-only, like the KPI
    route's check, which is not itself recorded on the ledger)."""
    check_csrf(viewer, csrf)
    report = verify_hub(get_hub(request))
    start = max(1, report.first_bad_seq - 2) if report.first_bad_seq else 1
    return _explorer(request, viewer, Filters(start=start), report=report)


@router.get("/audit/verify", response_class=RedirectResponse)
def verify_page(viewer: Viewer = Depends(page(*READERS))) -> RedirectResponse:
    """The report's own address, opened again (the language switch, a reload without the
    form): the explorer, where "Verify now" runs the check again."""
    return RedirectResponse(f"{PREFIX}/audit", status_code=303)


@router.get("/audit/entries/{seq}", response_class=HTMLResponse)
def entry_detail(seq: int, request: Request,
                 viewer: Viewer = Depends(page(*READERS))) -> HTMLResponse:
    hub = get_hub(request)
    hub.audit.flush()
    entry = hub.audit.store.entry(seq) if 1 <= seq <= MAX_SEQ else None
    if entry is None:
        return render(request, viewer, "error.html", status_code=404,
                      title=viewer.t("Entry {seq}", seq=seq),
                      message=viewer.t("The ledger has no entry {seq}.", seq=seq))
    with hub.sessions() as session:
        keys = hub_keys(session)
    trusted = [k for k, _, _ in keys]
    previous = hub.audit.store.entry(seq - 1) if seq > 1 else None
    checks = {"fields_ok": expected_hash(entry) == entry.hash,
              "chain_ok": (previous.hash if previous else GENESIS_HASH) == entry.prev_hash}
    try:
        proof = hub.audit.proof(seq)  # what GET /api/v1/audit/proof/{seq} returns
    except ValueError as exc:  # a stored hash edited into something that is not hex
        return _page(request, viewer, "audit_entry.html", title=viewer.t("Entry {seq}", seq=seq),
                     entry=entry, proof=None, proof_error=str(exc), **checks)
    return _page(
        request, viewer, "audit_entry.html", title=viewer.t("Entry {seq}", seq=seq),
        entry=entry, proof=proof, proof_json=json.dumps(proof.to_dict(), indent=2),
        verified=proof.verify(trusted),
        signature_problem=verify_checkpoint(proof.checkpoint, trusted),
        signer=next(((created, retired) for k, created, retired in keys
                     if k == proof.checkpoint.key_id), None), **checks)


# --- node ledgers: what the hub can check without the nodes' state files -------------------

@dataclass
class NodeLedger:
    """One node's published checkpoints held to each other and to the hub's own record."""

    node: str
    org: str
    published: int = 0
    latest: Checkpoint | None = None
    received_at: datetime | None = None
    executions: int = 0  # task.result entries the hub recorded for this node
    covered: int = 0  # … of which before the latest checkpoint reached the hub
    problems: list[str] = field(default_factory=list)


def _published(session: Session) -> dict[int, list[tuple[Checkpoint, datetime]]]:
    rows = session.execute(
        select(StoredEnvelope.node_id, StoredEnvelope.received_at, StoredEnvelope.body)
        .where(StoredEnvelope.kind == CHECKPOINT_KIND).order_by(StoredEnvelope.id))
    out: dict[int, list[tuple[Checkpoint, datetime]]] = {}
    for node_id, received, body in rows:
        out.setdefault(node_id, []).append((Checkpoint.from_dict(body["payload"]), received))
    return out


def _hold(row: NodeLedger, cps: list[tuple[Checkpoint, datetime]], keys: set[str],
          recorded: list[datetime], t: Translator) -> None:
    seen: dict[int, str] = {}
    largest = 0
    for cp, _ in cps:
        problem = verify_checkpoint(cp, keys)
        if problem is None and cp.ledger_id != row.node:
            problem = t("checkpoint at size {size} is for ledger {other}", size=cp.size,
                        other=cp.ledger_id)
        if problem:
            row.problems.append(problem)
        if cp.size < largest:
            row.problems.append(t("size went down from {a} to {b}: entries were removed",
                                  a=largest, b=cp.size))
        if seen.get(cp.size, cp.root) != cp.root:
            row.problems.append(t("two checkpoints at size {size} with different roots: the "
                                  "ledger was rewritten", size=cp.size))
        seen[cp.size], largest = cp.root, max(largest, cp.size)
    row.published = len(cps)
    if cps:
        row.latest, row.received_at = cps[-1]
    row.executions = len(recorded)
    if row.latest is not None and row.received_at is not None:
        row.covered = sum(1 for at in recorded if at <= row.received_at)
        if row.latest.size < row.covered:  # every execution is a task.run entry on the node
            row.problems.append(t("the node's ledger had {size} entries, fewer than the {n} "
                                  "executions the hub recorded for it by then",
                                  size=row.latest.size, n=row.covered))


def node_ledgers(hub: HubState, t: Translator) -> list[NodeLedger]:
    hub.audit.flush()
    times: dict[int, datetime] = {}
    results = []
    for e in hub.audit.store.entries():
        if e.action == HUB_ACTION:
            results.append(e)
            times[e.seq] = entry_time(e.time) or datetime.max.replace(tzinfo=UTC)
    by_node: dict[str, list[datetime]] = {}
    for x in executions(results, HUB_ACTION):
        by_node.setdefault(x.node, []).append(times[x.seq])
    with hub.sessions() as session:
        published = _published(session)
        out = []
        for node in session.scalars(nodes_with_documents().order_by(Node.name)):
            row = NodeLedger(node.name, node.org.name)
            _hold(row, published.get(node.id, []), node_keys.history(session, node.id),
                  by_node.get(node.name, []), t)
            out.append(row)
    return out


@router.get("/audit/nodes", response_class=HTMLResponse)
def nodes(request: Request, viewer: Viewer = Depends(page(*READERS))) -> HTMLResponse:
    rows = node_ledgers(get_hub(request), viewer.t)
    return _page(request, viewer, "audit_nodes.html", title=viewer.t("Node ledgers"),
                  rows=rows)
