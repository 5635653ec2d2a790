"""Key rotation (node and hub) and hub-signed task assignments nodes can verify."""

from __future__ import annotations

from typing import Any

import pytest
from hubkit import CC_PARTIAL, Space
from nacl.signing import SigningKey
from sqlalchemy import select

from healthspace.core.envelope import (
    EnvelopeError,
    rotation_statement,
    seal,
    verify_assignment,
    verify_rotation,
)
from healthspace.hub.bootstrap import rotate_hub_key
from healthspace.hub.db.models import HubKey, NodeKey, StoredEnvelope
from healthspace.hub.db.session import make_engine, make_sessionmaker
from healthspace.hub.services.envelopes import reverify


def _rotate(
    space: Space, old: SigningKey, new: SigningKey, signer: SigningKey | None = None
) -> Any:
    hub = space.hub
    statement = rotation_statement(old, new, at=hub.clock.now())
    envelope = seal("key.rotate", statement, signer or old, node_id=hub.nodes["node-a"],
                    clock=hub.clock)
    return hub.call("POST", "/node/key", space.node_a, json=envelope.model_dump(mode="json"))


def test_node_key_rotation(space: Space) -> None:
    hub = space.hub
    old, new = hub.keys["node-a"], SigningKey.generate()
    signed_before = hub.seal(space.node_a, "catalog", {})  # sealed, not yet sent
    response = _rotate(space, old, new)
    assert response.status_code == 200, response.text
    assert response.json() == {"node": "node-a", "public_key": new.verify_key.encode().hex(),
                               "retired": old.verify_key.encode().hex()}
    # a message sealed before the rotation still lands (it was in flight) ...
    hub.ok("PUT", "/node/catalog", space.node_a, json=signed_before)
    # ... but the old key signs nothing new
    hub.clock.advance(seconds=1)
    response = hub.call("PUT", "/node/catalog", space.node_a,
                        json=hub.seal(space.node_a, "catalog", {}))
    assert response.status_code == 401 and response.json()["detail"]["field"] == "key_id"
    hub.keys["node-a"] = new
    view = hub.ok("PUT", "/node/catalog", space.node_a, json=hub.seal(space.node_a, "catalog", {}))
    assert view["public_key"] == new.verify_key.encode().hex()
    engine = make_engine(hub.url)
    with make_sessionmaker(engine)() as session:
        keys = session.scalars(
            select(NodeKey).where(NodeKey.node_id == hub.nodes["node-a"]).order_by(NodeKey.id)
        ).all()
        assert [(k.public_key, k.retired_at is None) for k in keys] == [
            (old.verify_key.encode().hex(), False), (new.verify_key.encode().hex(), True)]
        for stored in session.scalars(select(StoredEnvelope)):  # old envelopes still verify
            reverify(session, stored)
    engine.dispose()


def test_bad_rotations_are_refused(space: Space) -> None:
    hub = space.hub
    old, new, stranger = hub.keys["node-a"], SigningKey.generate(), SigningKey.generate()
    assert _rotate(space, old, new, signer=stranger).status_code == 401  # not the node's key
    response = _rotate(space, stranger, new, signer=old)  # old_key is not the signer
    assert response.status_code == 422 and response.json()["detail"]["field"] == "payload.old_key"
    statement = rotation_statement(old, new, at=hub.clock.now())
    statement["new_key"] = stranger.verify_key.encode().hex()  # new key did not prove possession
    envelope = seal("key.rotate", statement, old, node_id=hub.nodes["node-a"], clock=hub.clock)
    response = hub.call("POST", "/node/key", space.node_a, json=envelope.model_dump(mode="json"))
    assert response.status_code == 401 and response.json()["detail"]["field"] == "payload"
    envelope = seal("key.rotate", {"old_key": "x"}, old, node_id=hub.nodes["node-a"],
                    clock=hub.clock)
    response = hub.call("POST", "/node/key", space.node_a, json=envelope.model_dump(mode="json"))
    assert response.status_code == 422
    taken = hub.keys["node-b"]
    response = _rotate(space, old, taken)
    assert response.status_code == 409 and response.json()["detail"]["field"] == "public_key"


def test_assignments_are_signed_by_the_hub(space: Space) -> None:
    hub = space.hub
    hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None and task["hub_signature"]
    info = hub.ok("GET", "/hub/key", space.node_a)
    assert info["rotations"] == []
    verify_assignment(task, [info["public_key"]])
    forged = {**task, "min_cell_size": 5}
    with pytest.raises(EnvelopeError):
        verify_assignment(forged, [info["public_key"]])
    with pytest.raises(EnvelopeError):
        verify_assignment(task, [SigningKey.generate().verify_key.encode().hex()])


def test_hub_key_rotation(space: Space) -> None:
    hub = space.hub
    first = hub.ok("GET", "/hub/key", space.alice)["public_key"]
    statement = rotate_hub_key(hub.url, clock=hub.clock)
    assert statement["old_key"] == first
    info = hub.ok("GET", "/hub/key", space.node_b)
    assert info["public_key"] == statement["new_key"] != first
    assert info["rotations"] == [statement]
    # a node that pinned the first key follows the vouched-for chain to the current one
    pinned = [first]
    for step in info["rotations"]:
        if step["old_key"] in pinned:
            pinned.append(verify_rotation(step))
    assert info["public_key"] in pinned
    hub.submit(space.alice, nodes=["node-a"])
    task = hub.next_task(space.node_a)
    assert task is not None
    verify_assignment(task, [info["public_key"]])
    with pytest.raises(EnvelopeError):
        verify_assignment(task, [first])  # signed with the new key, not the retired one
    engine = make_engine(hub.url)
    with make_sessionmaker(engine)() as session:
        rows = session.scalars(select(HubKey).order_by(HubKey.id)).all()
        assert [r.retired_at is not None for r in rows] == [True, False]
    engine.dispose()
    task_done = hub.post(space.node_a, task["task_id"], status="completed", partial=CC_PARTIAL)
    assert task_done["accepted"] is True
