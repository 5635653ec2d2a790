"""Secure aggregation at the hub: prekey stock, sessions in signed tasks, masked combine,
dropout reruns without the missing node."""

from __future__ import annotations

from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hubkit import Space
from nacl.signing import SigningKey

from healthspace.analyses import registry
from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params, Summable
from healthspace.analyses.cohort_count import breakdown_keys
from healthspace.analyses.secure import pack
from healthspace.core.envelope import rotation_statement, seal
from healthspace.privacy.secagg import mask
from healthspace.privacy.secagg_keys import Prekey, make_prekey, verify_prekey_roster

NODES = ("node-a", "node-b", "node-payer")


class Keys:
    """The nodes' one-time keys, uploaded through the API; private halves kept here."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.private: dict[str, X25519PrivateKey] = {}
        self.headers = {"node-a": space.node_a, "node-b": space.node_b,
                        "node-payer": space.node_payer}

    def upload(self, name: str, count: int = 2) -> dict[str, Any]:
        hub = self.space.hub
        prekeys = []
        for _ in range(count):
            private, prekey = make_prekey(name, hub.keys[name])
            self.private[prekey.key_id] = private
            prekeys.append(prekey.model_dump())
        envelope = hub.seal(self.headers[name], "secagg.prekeys", {"prekeys": prekeys})
        return hub.ok("POST", "/node/secagg/prekeys", self.headers[name], json=envelope)

    def answer(self, name: str, count: int) -> dict[str, Any]:
        """Claim the next task and post the node's masked exact count."""
        hub, headers = self.space.hub, self.headers[name]
        task = hub.next_task(headers)
        assert task is not None and task["secure"] is not None
        roster = [(Prekey.model_validate(e["prekey"]), e["node_key"])
                  for e in task["secure"]["roster"]]
        peers = verify_prekey_roster(roster)
        own = next(p for p, _ in roster if p.node == name)
        summable = Summable({"min_cell_size": 10, "count": count},
                            {"count": np.asarray([count]),
                             "cells": np.zeros(len(breakdown_keys()), np.int64)},
                            frozenset({"count", "cells"}))
        payload = mask({"count": summable.sums["count"], "cells": summable.sums["cells"]},
                       node=name, private_key=self.private[own.key_id], peers=peers,
                       session_id=task["secure"]["session_id"], round=task["round"])
        hub.post(headers, task["task_id"], status="completed", partial=pack(summable, payload))
        return task


def submit(space: Space, **spec: Any) -> dict[str, Any]:
    return space.hub.submit(space.alice, nodes=list(NODES), secure_aggregation=True, **spec)


def test_masked_counts_sum_exactly_and_the_hub_keeps_only_masked_values(space: Space):
    keys = Keys(space)
    for name in NODES:
        assert keys.upload(name) == {"available": 2}
    study = submit(space)
    assert study["secure_aggregation"] is True
    counts = {"node-a": 40, "node-b": 25, "node-payer": 30}
    sessions = {keys.answer(name, n)["secure"]["session_id"] for name, n in counts.items()}
    assert len(sessions) == 1
    view = space.hub.study(space.alice, study["id"])
    assert view["status"] == "completed", view["error"]
    assert view["result"]["total"] == 95 and view["result"]["secure_aggregation"] is True
    assert view["result"]["sites"] == counts
    # Each node's key was used once: the stock went down by one.
    for name in NODES:
        assert space.hub.ok("GET", "/node/secagg/prekeys", keys.headers[name]) == {"available": 1}


def test_a_dropout_reruns_the_round_without_the_missing_node(space: Space):
    keys = Keys(space)
    for name in NODES:
        keys.upload(name)
    study = submit(space)
    first = keys.answer("node-a", 40)
    keys.answer("node-b", 25)
    task = space.hub.next_task(keys.headers["node-payer"])
    space.hub.post(keys.headers["node-payer"], task["task_id"], status="failed", error="disk")
    view = space.hub.study(space.alice, study["id"])
    assert view["status"] == "running" and view["round"] == 2
    reran = [e for e in view["timeline"] if e["event"] == "secure_rerun"]
    assert reran and reran[0]["detail"]["missing"] == ["node-payer"]
    second = keys.answer("node-a", 40)
    assert second["secure"]["session_id"] != first["secure"]["session_id"]
    assert [e["prekey"]["node"] for e in second["secure"]["roster"]] == ["node-a", "node-b"]
    keys.answer("node-b", 25)
    view = space.hub.study(space.alice, study["id"])
    assert view["status"] == "partial", view["error"]
    assert view["result"]["total"] == 65
    assert "node-payer" in view["error"] and "disk" in view["error"]


def test_a_node_without_prekeys_is_refused_and_two_are_needed(space: Space):
    keys = Keys(space)
    keys.upload("node-a", count=1)
    keys.upload("node-b", count=1)
    study = submit(space)
    view = space.hub.study(space.alice, study["id"])
    payer = next(t for t in view["tasks"] if t["node"] == "node-payer")
    assert payer["status"] == "refused" and "prekey" in payer["error"]
    keys.answer("node-a", 40)
    keys.answer("node-b", 25)
    assert space.hub.study(space.alice, study["id"])["result"]["total"] == 65

    keys.upload("node-a", count=1)
    lonely = submit(space)  # node-b used its only key: one node with a key is not enough
    view = space.hub.study(space.alice, lonely["id"])
    assert view["status"] == "failed"
    assert "at least two nodes with prekeys" in view["error"]


def test_bad_prekey_uploads_name_the_field(space: Space):
    hub, headers = space.hub, space.node_a
    _, foreign = make_prekey("node-b", hub.keys["node-b"])  # another node's prekey
    envelope = hub.seal(headers, "secagg.prekeys", {"prekeys": [foreign.model_dump()]})
    response = hub.call("POST", "/node/secagg/prekeys", headers, json=envelope)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "payload.prekeys[0].node"
    _, forged = make_prekey("node-a", hub.keys["node-b"])  # signed with the wrong key
    envelope = hub.seal(headers, "secagg.prekeys", {"prekeys": [forged.model_dump()]})
    response = hub.call("POST", "/node/secagg/prekeys", headers, json=envelope)
    assert response.json()["detail"]["field"] == "payload.prekeys[0].signature"
    envelope = hub.seal(headers, "secagg.prekeys", {"prekeys": []})
    response = hub.call("POST", "/node/secagg/prekeys", headers, json=envelope)
    assert response.status_code == 422 and response.json()["detail"]["field"] == "payload.prekeys"


def test_secure_aggregation_is_refused_where_it_does_not_apply(space: Space):
    response = space.hub.call("POST", "/studies", space.alice, json={
        "analysis": "summary", "nodes": ["node-a", "node-b"], "secure_aggregation": True,
        "params": {"variables": ["age"]}})
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "secure_aggregation"


def test_an_l3_policy_makes_it_secure_by_default(space: Space):
    hub: Any = space.hub
    policy = {"level": "L3", "approval_mode": "auto"}
    hub.publish_policy(space.node_a, {**policy, "version": 2})
    study = hub.submit(space.alice, nodes=["node-a", "node-b"])
    assert study["secure_aggregation"] is True
    plain = hub.submit(space.alice, nodes=["node-b", "node-payer"])
    assert plain["secure_aggregation"] is False



class RoundsSeen(Analysis):
    """Sums ``x`` securely over two rounds and reports the round numbers combine was given."""

    name = "hubtest_secure_rounds"
    requires_cohort = False
    max_rounds = 2
    secure = True

    def local(self, ctx: LocalContext, params: Params, round_input: Any) -> dict[str, Any]:
        return {}

    def combine(self, partials: Any, params: Params, state: dict[str, Any],
                round: int) -> Final | NextRound:
        raise AssertionError("this test runs it with secure aggregation only")

    def combine_secure(self, sums: Any, publics: Any, params: Params, state: dict[str, Any],
                       round: int) -> Final | NextRound:
        seen = [*state.get("seen", []), round]
        if round == 1:
            return NextRound({"again": True}, {"seen": seen})
        return Final({"seen": seen, "total": int(sums["x"][0]), "nodes": sorted(publics)})


registry.names()
if RoundsSeen.name not in registry.names():
    registry.register(RoundsSeen())


def test_after_a_rerun_the_analysis_still_sees_its_own_round_numbers(space: Space):
    keys = Keys(space)
    for name in NODES:
        keys.upload(name)
    study = space.hub.submit(space.alice, analysis=RoundsSeen.name, nodes=list(NODES),
                             secure_aggregation=True)

    def answer(name: str, x: int) -> dict[str, Any]:
        hub, headers = space.hub, keys.headers[name]
        task = hub.next_task(headers)
        roster = [(Prekey.model_validate(e["prekey"]), e["node_key"])
                  for e in task["secure"]["roster"]]
        own = next(p for p, _ in roster if p.node == name)
        summable = Summable({}, {"x": np.asarray([x])}, frozenset({"x"}))
        payload = mask({"x": summable.sums["x"]}, node=name,
                       private_key=keys.private[own.key_id], peers=verify_prekey_roster(roster),
                       session_id=task["secure"]["session_id"], round=task["round"])
        hub.post(headers, task["task_id"], status="completed", partial=pack(summable, payload))
        return task

    answer("node-a", 1)
    answer("node-b", 2)
    task = space.hub.next_task(keys.headers["node-payer"])
    space.hub.post(keys.headers["node-payer"], task["task_id"], status="failed", error="gone")
    for physical in (2, 3):  # the rerun of round 1, then round 2
        assert answer("node-a", 1)["round"] == physical
        answer("node-b", 2)
    view = space.hub.study(space.alice, study["id"])
    assert view["status"] == "partial", view["error"]
    assert view["result"] == {"seen": [1, 2], "total": 3, "nodes": ["node-a", "node-b"]}


def test_prekeys_signed_by_a_retired_node_key_are_never_used(space: Space):
    hub, keys = space.hub, Keys(space)
    keys.upload("node-a", count=3)
    old, new = hub.keys["node-a"], SigningKey.generate()
    statement = rotation_statement(old, new, at=hub.clock.now())
    hub.keys["node-a"] = new
    envelope = seal("key.rotate", statement, old, node_id=hub.nodes["node-a"], clock=hub.clock)
    hub.ok("POST", "/node/key", space.node_a, json=envelope.model_dump(mode="json"))
    assert hub.ok("GET", "/node/secagg/prekeys", space.node_a) == {"available": 0}
    keys.upload("node-a", count=1)  # signed with the new key
    keys.upload("node-b", count=1)
    study = submit(space)
    view = hub.study(space.alice, study["id"])
    roster_task = keys.answer("node-a", 40)
    entry = next(e for e in roster_task["secure"]["roster"] if e["prekey"]["node"] == "node-a")
    assert entry["node_key"] == new.verify_key.encode().hex()
    assert next(t for t in view["tasks"] if t["node"] == "node-payer")["status"] == "refused"
