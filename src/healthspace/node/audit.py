"""The node's audit ledger: every consequential node action goes through ``record``.

Entries live in the node's state file, hash-chained and covered by a signed checkpoint at the
head after every record, so ``healthspace audit verify --node-state`` can prove what the node
ran, for whom, and what consent and policy were in force.
"""

from __future__ import annotations

from typing import Any

from healthspace.governance.policy import UsagePolicy
from healthspace.ledger.ledger import Ledger
from healthspace.ledger.sqlite_store import SqliteLedgerStore
from healthspace.node.state import NodeState


def task_subject(study_id: int, round: int, task_id: int) -> str:
    """The subject convention shared with the hub, so ``audit crosscheck`` can pair them."""
    return f"study:{study_id}/round:{round}/task:{task_id}"


def record(
    state: NodeState,
    action: str,
    subject: str,
    payload: dict[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> None:
    """Append one entry and sign a checkpoint at the new head."""
    store = SqliteLedgerStore(state.path)
    try:
        ledger = Ledger(store, owner=state.node_name(), signing_key=state.signing_key(),
                        clock=state.clock)
        ledger.append(actor or state.node_name(), action, subject, payload)
        ledger.checkpoint()
    finally:
        store.close()


def set_policy(state: NodeState, policy: UsagePolicy, *, actor: str = "data_holder") -> bool:
    """Store the node's policy and record the change; returns False when unchanged."""
    changed = state.set_policy(policy)
    if changed:
        record(state, "policy.change", f"policy:{policy.dataset}",
               policy.model_dump(mode="json"), actor=actor)
    return changed


def latest_checkpoint(state: NodeState) -> dict[str, Any] | None:
    """The node ledger's latest signed checkpoint, as published to the hub."""
    store = SqliteLedgerStore(state.path)
    try:
        cp = store.latest_checkpoint()
    finally:
        store.close()
    return cp.to_dict() if cp is not None else None
