"""Node usage policies at the hub: the signed copy each node publishes, used for pre-checks."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.orm import Session

from healthspace.core.clock import Clock
from healthspace.core.envelope import Envelope
from healthspace.core.errors import Conflict, InvalidInput, NotFound, invalid_from_validation
from healthspace.governance.policy import UsagePolicy
from healthspace.hub.db.models import Node
from healthspace.hub.schemas import PolicyPublished
from healthspace.hub.services import audit, envelopes


def node_policy(node: Node) -> UsagePolicy:
    """The node's last published policy; ``UsagePolicy()`` defaults if it published none."""
    return UsagePolicy.model_validate(node.policy) if node.policy is not None else UsagePolicy()


def _parse(envelope: Envelope) -> UsagePolicy:
    if set(envelope.payload) != {"policy"} or not isinstance(envelope.payload["policy"], dict):
        raise InvalidInput('the payload must be {"policy": {...}}', field="payload.policy")
    try:
        return UsagePolicy.model_validate(envelope.payload["policy"])
    except ValidationError as exc:
        raise invalid_from_validation(exc, prefix=("payload", "policy")) from exc


def publish(
    session: Session, clock: Clock, node_id: int, envelope: Envelope
) -> PolicyPublished:
    """Store a node's signed policy. Republishing the same version replaces it; older → 409."""
    stored = envelopes.accept(session, clock, node_id, envelope, kind="policy")
    policy = _parse(envelope)
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound("node not found")
    if node.policy_version is not None and policy.version < node.policy_version:
        raise Conflict(
            f"policy version {policy.version} is older than the published version "
            f"{node.policy_version}; bump the version",
            field="payload.policy.version",
        )
    node.policy = policy.model_dump(mode="json")
    node.policy_version = policy.version
    node.policy_envelope_id = stored.id
    node.last_seen_at = stored.received_at
    audit.queue(session, node.name, "policy.publish", f"node:{node.name}",
                {"version": policy.version, "envelope_id": stored.id})
    session.commit()
    return PolicyPublished(
        node=node.name,
        version=policy.version,
        policy=node.policy,
        envelope_id=stored.id,
        published_at=stored.received_at,
    )
