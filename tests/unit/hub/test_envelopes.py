"""Signed node messages: forgery and replay are refused; every result traces to its envelope."""

from __future__ import annotations

from typing import Any

from hubkit import CC_PARTIAL, Space, bearer
from nacl.signing import SigningKey
from sqlalchemy import select

from healthspace.core.envelope import seal
from healthspace.hub.db.models import EnvelopeNonce, StoredEnvelope, Task
from healthspace.hub.db.session import make_engine, make_sessionmaker
from healthspace.hub.services.envelopes import reverify


def _claimed(space: Space) -> dict[str, Any]:
    space.hub.submit(space.alice, nodes=["node-a"])
    task = space.hub.next_task(space.node_a)
    assert task is not None
    return task


def _post(space: Space, task_id: int, envelope: dict[str, Any]) -> Any:
    return space.hub.call("POST", f"/node/tasks/{task_id}/result", space.node_a, json=envelope)


def _problem(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["detail"]["field"]


def _result(task: dict[str, Any]) -> dict[str, Any]:
    return {"status": "completed", "partial": CC_PARTIAL}


def test_tampered_payload_is_rejected(space: Space) -> None:
    task = _claimed(space)
    envelope = space.hub.result_envelope(space.node_a, task["task_id"], **_result(task))
    envelope["payload"]["partial"]["count"] = 4200
    assert _problem(_post(space, task["task_id"], envelope)) == (401, "payload_digest")


def test_tampered_signed_field_is_rejected(space: Space) -> None:
    task = _claimed(space)
    envelope = space.hub.result_envelope(space.node_a, task["task_id"], **_result(task))
    envelope["meter"] = {"records": 1}
    assert _problem(_post(space, task["task_id"], envelope)) == (401, "signature")


def test_a_key_not_enrolled_for_the_node_is_rejected(space: Space) -> None:
    task = _claimed(space)
    hub = space.hub
    for key in (SigningKey.generate(), hub.keys["node-b"]):  # a stranger's, another node's
        envelope = seal("task.result", _result(task), key, node_id=hub.nodes["node-a"],
                        study_id=task["study_id"], round=task["round"], clock=hub.clock)
        response = _post(space, task["task_id"], envelope.model_dump(mode="json"))
        assert _problem(response) == (401, "key_id")


def test_claiming_another_nodes_identity_is_rejected(space: Space) -> None:
    task = _claimed(space)
    hub = space.hub
    envelope = seal("task.result", _result(task), hub.keys["node-a"], node_id=hub.nodes["node-b"],
                    study_id=task["study_id"], round=task["round"], clock=hub.clock)
    assert _problem(_post(space, task["task_id"], envelope.model_dump(mode="json"))) == (
        422, "node_id")


def test_envelope_must_match_the_task_and_kind(space: Space) -> None:
    task = _claimed(space)
    hub = space.hub
    wrong = {
        "study_id": hub.seal(space.node_a, "task.result", _result(task),
                             study_id=task["study_id"] + 1, round=1),
        "round": hub.seal(space.node_a, "task.result", _result(task),
                          study_id=task["study_id"], round=2),
        "kind": hub.seal(space.node_a, "catalog", _result(task),
                         study_id=task["study_id"], round=1),
    }
    for field, envelope in wrong.items():
        assert _problem(_post(space, task["task_id"], envelope)) == (422, field)
    catalog = hub.seal(space.node_a, "task.result", {"tables": {}})
    response = hub.call("PUT", "/node/catalog", space.node_a, json=catalog)
    assert _problem(response) == (422, "kind")


def test_replayed_nonce_is_a_conflict(space: Space) -> None:
    task = _claimed(space)
    envelope = space.hub.result_envelope(space.node_a, task["task_id"], **_result(task))
    assert _post(space, task["task_id"], envelope).json()["duplicate"] is False
    assert _problem(_post(space, task["task_id"], envelope)) == (409, "nonce")
    # a retry is a fresh envelope: acknowledged as a duplicate, nothing changes
    again = space.hub.post(space.node_a, task["task_id"], **_result(task))
    assert again["duplicate"] is True


def test_stale_and_future_timestamps_are_refused(space: Space) -> None:
    task = _claimed(space)
    hub = space.hub
    old = hub.result_envelope(space.node_a, task["task_id"], **_result(task))
    hub.clock.advance(minutes=5, seconds=1)
    assert _problem(_post(space, task["task_id"], old)) == (409, "timestamp")
    hub.clock.advance(minutes=-10, seconds=-2)
    future = old  # now more than five minutes ahead of the hub
    assert _problem(_post(space, task["task_id"], future)) == (409, "timestamp")
    hub.clock.advance(minutes=5, seconds=1)
    assert _post(space, task["task_id"], old).status_code == 200  # inside the window again


def test_nonces_are_pruned_after_twice_the_window(space: Space) -> None:
    hub = space.hub
    engine = make_engine(hub.url)
    sessions = make_sessionmaker(engine)

    def nonces() -> int:
        with sessions() as session:
            return len(session.scalars(select(EnvelopeNonce.nonce)).all())

    before = nonces()
    assert before >= 6  # the catalogues and policies of three nodes
    hub.clock.advance(minutes=11)
    hub.ok("PUT", "/node/catalog", space.node_a, json=hub.seal(space.node_a, "catalog", {}))
    assert nonces() == 1
    engine.dispose()


def test_every_result_is_linked_to_its_stored_envelope(space: Space) -> None:
    task = _claimed(space)
    space.hub.post(space.node_a, task["task_id"], **_result(task))
    engine = make_engine(space.hub.url)
    with make_sessionmaker(engine)() as session:
        row = session.get(Task, task["task_id"])
        assert row is not None and row.envelope_id is not None
        stored = session.get(StoredEnvelope, row.envelope_id)
        assert stored is not None
        assert (stored.node_id, stored.kind, stored.study_id, stored.round) == (
            space.hub.nodes["node-a"], "task.result", task["study_id"], 1)
        assert stored.body["payload"]["partial"] == CC_PARTIAL
        reverify(session, stored)  # intact and signed by the node's key
        kinds = session.scalars(select(StoredEnvelope.kind).order_by(StoredEnvelope.id)).all()
        assert kinds.count("catalog") == 3 and kinds.count("policy") == 3
    engine.dispose()


def test_first_signed_catalogue_registers_the_key_of_a_keyless_node(space: Space) -> None:
    hub = space.hub
    enrolled = hub.ok("POST", "/nodes", hub.operator, 201, json={"name": "node-c", "org": "hosp-a"})
    headers = bearer(enrolled["token"])
    hub.nodes["node-c"], hub.names[headers["Authorization"]] = enrolled["id"], "node-c"
    hub.keys["node-c"] = key = SigningKey.generate()
    policy = hub.seal(headers, "policy", {"policy": {}})
    response = hub.call("PUT", "/node/policy", headers, json=policy)
    assert _problem(response) == (401, "key_id")  # only a catalogue may introduce the key
    view = hub.ok("PUT", "/node/catalog", headers, json=hub.seal(headers, "catalog", {}))
    assert view["public_key"] == key.verify_key.encode().hex()
    hub.keys["node-c"] = SigningKey.generate()  # an impostor with the token but not the key
    response = hub.call("PUT", "/node/catalog", headers, json=hub.seal(headers, "catalog", {}))
    assert _problem(response) == (401, "key_id")


def test_a_key_belongs_to_one_node(space: Space) -> None:
    hub = space.hub
    taken = hub.keys["node-a"].verify_key.encode().hex()
    body = {"name": "node-c", "org": "hosp-b", "public_key": taken}
    response = hub.call("POST", "/nodes", hub.operator, json=body)
    assert _problem(response) == (409, "public_key")
    body["public_key"] = "zz"
    assert hub.call("POST", "/nodes", hub.operator, json=body).status_code == 422


def test_ids_beyond_the_hubs_row_ids_are_refused_before_anything_is_stored(
        space: Space) -> None:
    task = _claimed(space)
    for field, value in (("study_id", 2**70), ("round", 2**40), ("node_id", 0)):
        envelope = space.hub.result_envelope(space.node_a, task["task_id"], **_result(task))
        envelope[field] = value
        response = _post(space, task["task_id"], envelope)
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["field"].endswith(field)
    good = space.hub.result_envelope(space.node_a, task["task_id"], **_result(task))
    assert _post(space, task["task_id"], good).status_code == 200
