"""Specialty-disease registries at the hub: register and re-version, read, resolve a study's
``registry`` to its definition, and accept nodes' signed materialisation reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import OrgKind, PrincipalKind
from healthspace.core.envelope import Envelope
from healthspace.core.errors import Forbidden, InvalidInput, NotFound
from healthspace.core.models import RegistryRef, StudySpec
from healthspace.core.registry_defs import (
    NodeRegistryStatus,
    RegistryRefresh,
    RegistryReport,
    RegistryReportAck,
    RegistrySpec,
    RegistryView,
)
from healthspace.hub.db.models import (
    Node,
    Registry,
    RegistryNodeStatus,
    RegistryVersion,
    nodes_with_documents,
)
from healthspace.hub.principal import Principal
from healthspace.hub.services import audit, envelopes
from healthspace.hub.services.nodes import holds_persons

STATUS_KIND = "registry.status"
# What makes two registrations the same version (everything the operator gave).
_DEFINITION = ("title", "description", "cohort", "dataset", "refresh", "nodes")

Current = tuple[Registry, RegistryVersion]


def _current(session: Session, name: str) -> Current | None:
    row = session.execute(
        select(Registry, RegistryVersion)
        .join(RegistryVersion, (RegistryVersion.registry_id == Registry.id)
              & (RegistryVersion.version == Registry.current_version))
        .where(Registry.name == name)
    ).first()
    return (row[0], row[1]) if row is not None else None


def _all_current(session: Session) -> list[Current]:
    rows = session.execute(
        select(Registry, RegistryVersion)
        .join(RegistryVersion, (RegistryVersion.registry_id == Registry.id)
              & (RegistryVersion.version == Registry.current_version))
        .order_by(Registry.name)
    ).all()
    return [(row[0], row[1]) for row in rows]


def _takes_part(version: RegistryVersion, node: Node) -> bool:
    """Named nodes, or by default every hospital node holding persons (as for studies)."""
    if version.nodes is not None:
        return node.name in version.nodes
    return node.org.kind == OrgKind.HOSPITAL and holds_persons(node)


def _participants(version: RegistryVersion, nodes: Iterable[Node]) -> list[Node]:
    return [n for n in nodes if _takes_part(version, n)]


def _definition(spec: RegistrySpec) -> dict[str, Any]:
    dumped = spec.model_dump(mode="json")
    return {key: dumped[key] for key in _DEFINITION}


def _stored(version: RegistryVersion) -> dict[str, Any]:
    return {key: getattr(version, key) for key in _DEFINITION}


def register(session: Session, clock: Clock, principal: Principal, spec: RegistrySpec
             ) -> tuple[RegistryView, bool]:
    """Store ``spec`` as a registry's first or next version; the same definition again is a
    no-op (returns the current version and False)."""
    known = {n.name for n in session.scalars(select(Node).where(Node.name.in_(spec.nodes or [])))}
    for i, name in enumerate(spec.nodes or []):
        if name not in known:
            raise InvalidInput(f"unknown node {name!r}", field=f"nodes[{i}]")
    now = clock.now()
    found = _current(session, spec.name)
    definition = _definition(spec)
    if found is not None and _stored(found[1]) == definition:
        return _view(session, principal, *found), False
    if found is None:
        registry = Registry(name=spec.name, current_version=1, created_at=now, updated_at=now)
        session.add(registry)
        session.flush()
    else:
        registry = found[0]
        registry.current_version += 1
        registry.updated_at = now
    version = RegistryVersion(registry_id=registry.id, version=registry.current_version,
                              digest=spec.digest(), created_at=now, created_by=principal.name,
                              **definition)
    session.add(version)
    audit.queue(session, principal.name,
                "registry.register" if found is None else "registry.version",
                f"registry:{spec.name}",
                {"version": version.version, "digest": version.digest, "nodes": spec.nodes,
                 "refresh": definition["refresh"]})
    session.commit()
    return _view(session, principal, registry, version), True


def _statuses(session: Session, registry_ids: Sequence[int]) -> dict[int, list[RegistryNodeStatus]]:
    out: dict[int, list[RegistryNodeStatus]] = {}
    if registry_ids:
        for row in session.scalars(select(RegistryNodeStatus)
                                   .where(RegistryNodeStatus.registry_id.in_(registry_ids))):
            out.setdefault(row.registry_id, []).append(row)
    return out


def _size(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _view(session: Session, principal: Principal, registry: Registry, version: RegistryVersion,
          *, nodes: list[Node] | None = None,
          statuses: list[RegistryNodeStatus] | None = None) -> RegistryView:
    if nodes is None:
        nodes = list(session.scalars(nodes_with_documents().order_by(Node.name)))
    if statuses is None:
        statuses = _statuses(session, [registry.id]).get(registry.id, [])
    taking_part = _participants(version, nodes)
    names = [n.name for n in taking_part]
    reported = {row.node.name: row for row in statuses}
    status: dict[str, NodeRegistryStatus] = {}
    for name in names:
        row = reported.get(name)
        if row is None:
            status[name] = NodeRegistryStatus(node=name)
            continue
        status[name] = NodeRegistryStatus(
            node=name, version=row.version, size=_size(row.size),
            dataset_size=_size(row.dataset_size), refreshed_at=row.refreshed_at,
            reported_at=row.reported_at, error=row.error,
            current=row.version == version.version and row.digest == version.digest)
    return RegistryView(
        name=registry.name, title=version.title, description=version.description,
        cohort=version.cohort, dataset=version.dataset,
        refresh=RegistryRefresh.model_validate(version.refresh), nodes=version.nodes,
        version=version.version, digest=version.digest, created_at=version.created_at,
        created_by=version.created_by, first_registered_at=registry.created_at,
        participants=names, status=status)


def _visible_nodes(session: Session, principal: Principal) -> list[Node]:
    """The nodes a view is built over: every node for a user; a node only itself (it polls
    this every half minute, and sees neither the catalogue nor other nodes' status)."""
    query = nodes_with_documents().order_by(Node.name)
    if principal.kind == PrincipalKind.NODE:
        query = query.where(Node.id == principal.id)
    return list(session.scalars(query))


def list_registries(session: Session, principal: Principal, *, limit: int = 500,
                    offset: int = 0) -> list[RegistryView]:
    """Every registry (a node: those it takes part in), by name, with per-node status."""
    nodes = _visible_nodes(session, principal)
    current = _all_current(session)
    if principal.kind == PrincipalKind.NODE:
        current = [(r, v) for r, v in current if any(_takes_part(v, n) for n in nodes)]
    current = current[offset:offset + limit]
    statuses = _statuses(session, [r.id for r, _ in current])
    return [_view(session, principal, r, v, nodes=nodes, statuses=statuses.get(r.id, []))
            for r, v in current]


def get_registry(session: Session, principal: Principal, name: str) -> RegistryView:
    found = _current(session, name)
    if found is None:
        raise NotFound(f"registry {name!r} not found", field="name")
    nodes = _visible_nodes(session, principal)
    if principal.kind == PrincipalKind.NODE and not any(_takes_part(found[1], n) for n in nodes):
        raise Forbidden(f"this node does not take part in registry {name!r}")
    return _view(session, principal, *found, nodes=nodes)


def resolve(session: Session, spec: StudySpec) -> tuple[StudySpec, RegistryRef | None]:
    """A study naming a ``registry`` gets that registry's current cohort (and, for table
    analyses, its dataset) inline, and its participants as default nodes; everything after
    this (validation, policies, approvals, tasks) sees it exactly as if given inline."""
    if spec.registry is None:
        return spec, None
    if spec.cohort is not None or spec.dataset is not None:
        raise InvalidInput("give either a registry or a cohort and dataset, not both: the "
                           "registry brings its own", field="registry")
    found = _current(session, spec.registry)
    if found is None:
        raise InvalidInput(f"unknown registry {spec.registry!r}", field="registry")
    registry, version = found
    from healthspace.analyses import registry as catalogue

    update: dict[str, Any] = {"cohort": version.cohort}
    if catalogue.get(spec.analysis).uses_table:
        update["dataset"] = version.dataset
    names = [n.name for n in _participants(version, session.scalars(
        nodes_with_documents().order_by(Node.name)))]
    if spec.nodes is None:
        if not names:
            raise InvalidInput(f"no node takes part in registry {spec.registry!r} yet",
                               field="registry")
        update["nodes"] = names
    else:
        for i, name in enumerate(spec.nodes):
            if name not in names:
                raise InvalidInput(f"node {name!r} does not take part in registry "
                                   f"{spec.registry!r}", field=f"nodes[{i}]")
    ref = RegistryRef(name=registry.name, version=version.version, digest=version.digest)
    return spec.model_copy(update=update), ref


def report(session: Session, clock: Clock, node_id: int, envelope: Envelope
           ) -> RegistryReportAck:
    """Store a node's signed ``registry.status`` report; registries it does not take part in
    (any more) are left out of ``accepted``."""
    stored = envelopes.accept(session, clock, node_id, envelope, kind=STATUS_KIND)
    payload = envelopes.payload_as(envelope, RegistryReport)
    node = session.scalar(nodes_with_documents().where(Node.id == node_id))
    if node is None:
        raise NotFound("node not found")
    accepted: list[str] = []
    summary: dict[str, Any] = {}
    for i, item in enumerate(payload.registries):
        registry = session.scalar(select(Registry).where(Registry.name == item.name))
        if registry is None:
            raise InvalidInput(f"unknown registry {item.name!r}",
                               field=f"payload.registries[{i}].name")
        if item.version is not None:
            version = session.scalar(select(RegistryVersion).where(
                RegistryVersion.registry_id == registry.id,
                RegistryVersion.version == item.version))
            if version is None or version.digest != item.digest:
                raise InvalidInput(f"registry {item.name!r} has no version {item.version} "
                                   "with this digest", field=f"payload.registries[{i}].digest")
        current = _current(session, item.name)
        if current is None or not _takes_part(current[1], node):
            continue
        row = session.get(RegistryNodeStatus, (registry.id, node_id))
        if row is None:
            row = RegistryNodeStatus(registry_id=registry.id, node_id=node_id)
            session.add(row)
        row.version, row.digest = item.version, item.digest
        row.size = None if item.size is None else str(item.size)
        row.dataset_size = None if item.dataset_size is None else str(item.dataset_size)
        row.refreshed_at, row.error = item.refreshed_at, item.error
        row.reported_at, row.envelope_id = stored.received_at, stored.id
        accepted.append(item.name)
        summary[item.name] = {"version": item.version, "size": item.size,
                              "error": item.error}
    node.last_seen_at = stored.received_at
    audit.queue(session, node.name, STATUS_KIND, f"node:{node.name}",
                {"registries": summary, "envelope_id": stored.id})
    session.commit()
    return RegistryReportAck(node=node.name, accepted=accepted, envelope_id=stored.id)
