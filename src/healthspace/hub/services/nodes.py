"""Node enrolment (idempotent), the signed node catalogue, key rotation, node liveness."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.enums import DATA_HOLDER_KINDS, OrgKind
from healthspace.core.envelope import Envelope
from healthspace.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthspace.core.models import Catalog, NodeEnroll, NodeEnrolled, NodeView
from healthspace.hub.db.models import Node, nodes_with_documents
from healthspace.hub.principal import Principal
from healthspace.hub.schemas import KeyRotated
from healthspace.hub.services import audit, envelopes, node_keys, tokens
from healthspace.hub.services.directory import org_by_name
from healthspace.hub.services.throttle import Throttle
from healthspace.hub.services.views import node_view


def enrol(session: Session, clock: Clock, principal: Principal, spec: NodeEnroll) -> NodeEnrolled:
    """Create the node, or — same name, same organisation — rotate its token.

    Re-enrolling is how a node that lost its token (or was reinstalled) gets a new one;
    every earlier token of the node stops working at once. A ``public_key`` registers the
    node's signing key (on re-enrolment it replaces the current key, which is retired).
    """
    if not principal.is_operator and spec.org != principal.org:
        raise Forbidden(
            "a data_holder_admin may only enrol nodes of its own organisation", field="org"
        )
    org = org_by_name(session, spec.org)
    if OrgKind(org.kind) not in DATA_HOLDER_KINDS:
        kinds = ", ".join(sorted(DATA_HOLDER_KINDS))
        raise InvalidInput(
            f"organisation {org.name!r} is a {org.kind}; nodes belong to data holders ({kinds})",
            field="org",
        )
    node = session.scalar(select(Node).where(Node.name == spec.name))
    created = node is None
    if node is None:
        node = Node(name=spec.name, org_id=org.id, enrolled_at=clock.now())
        node.org = org
        session.add(node)
        session.flush()
    elif node.org_id != org.id:
        raise Conflict(
            f"node {spec.name!r} is already enrolled by organisation {node.org.name!r}",
            field="name",
        )
    else:
        tokens.revoke_node_tokens(session, clock, node.id)
    if spec.public_key is not None:
        node_keys.register(session, clock, node, spec.public_key)
    secret = tokens.issue(session, clock, node_id=node.id, label="node enrolment")
    audit.queue(session, principal.name, "node.enrol" if created else "node.reenrol",
                f"node:{node.name}", {"org": org.name, "public_key": spec.public_key})
    session.commit()
    return NodeEnrolled(id=node.id, name=node.name, org=org.name, token=secret, created=created)


def list_nodes(session: Session, *, limit: int, offset: int) -> list[NodeView]:
    rows = session.scalars(nodes_with_documents().order_by(Node.name).limit(limit).offset(offset))
    return [node_view(node) for node in rows]


def publish_catalog(
    session: Session, clock: Clock, node_id: int, envelope: Envelope
) -> NodeView:
    """Store a node's signed catalogue; the first one of a keyless node registers its key."""
    stored = envelopes.accept(
        session, clock, node_id, envelope, kind="catalog", trust_on_first_use=True
    )
    catalog = envelopes.payload_as(envelope, Catalog)
    if catalog.public_key is not None and catalog.public_key != envelope.key_id:
        raise InvalidInput("the catalogue names a key other than the one that signed it",
                           field="payload.public_key")
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("node not found")
    node.catalog = catalog.model_dump(mode="json")
    node.last_seen_at = stored.received_at
    session.commit()
    return node_view(node)


def rotate_key(session: Session, clock: Clock, node_id: int, envelope: Envelope) -> KeyRotated:
    """Register a new node key from a rotation statement enveloped with the current key."""
    envelopes.accept(session, clock, node_id, envelope, kind="key.rotate")
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("node not found")
    rotated = node_keys.rotate(session, clock, node, envelope.payload, envelope.key_id)
    audit.queue(session, node.name, "node.key_rotate", f"node:{node.name}", rotated)
    session.commit()
    return KeyRotated.model_validate(rotated)


# A node's last-seen stamp is written at most this often (hub clock): a node polling in a
# tight loop under load would otherwise cost a write transaction per poll, for a value that
# is read against minutes ("online / not polling", the last-seen gauge).
LAST_SEEN_EVERY = timedelta(seconds=5)
_LAST_SEEN = Throttle(LAST_SEEN_EVERY)


def seen(session: Session, clock: Clock, node_id: int) -> None:
    """Stamp the node's last-seen time in the caller's transaction, if it is due."""
    if _LAST_SEEN.due(session, clock, node_id):
        session.execute(update(Node).where(Node.id == node_id).values(last_seen_at=clock.now()))


def touch(session: Session, clock: Clock, node_id: int) -> None:
    """Record that a node called in (once per poll, not per long-poll re-check; the stamp is
    at most :data:`LAST_SEEN_EVERY` old)."""
    seen(session, clock, node_id)
    session.commit()


def holds_persons(node: Node) -> bool:
    tables = (node.catalog or {}).get("tables") or {}
    return bool(tables.get("person"))
