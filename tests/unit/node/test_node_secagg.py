"""The node's secure-aggregation keys: one-time binding, no mask reuse, pinned peers, deletion."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from nacl.signing import SigningKey

from healthspace.analyses.base import Summable
from healthspace.analyses.secure import combine_masked, pack
from healthspace.core.clock import FixedClock
from healthspace.core.errors import Refused
from healthspace.core.models import RosterEntry, SecureRound, TaskAssignment
from healthspace.node import secagg
from healthspace.node.state import NodeState
from healthspace.privacy.secagg import MaskedPayload, aggregate, mask, unmask_sum
from healthspace.privacy.secagg_keys import RosterError, make_prekey, verify_prekey_roster

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def nodes(tmp_path):
    """Two real node states (a, b) and a third peer (c) with a bare key."""
    states = {name: NodeState.init(tmp_path / f"{name}.state.sqlite", clock=FixedClock(NOW),
                                   name=name) for name in ("a", "b")}
    peer_key = SigningKey.generate()
    return states, peer_key


def roster(states, peer_key, *, peer_prekey=None):
    entries = []
    for name, state in states.items():
        prekey = secagg.new_prekeys(state, name, 1)[0]
        entries.append(RosterEntry(prekey=prekey, node_key=state.public_key_hex()))
    _, prekey = peer_prekey or make_prekey("c", peer_key)
    entries.append(RosterEntry(prekey=prekey, node_key=peer_key.verify_key.encode().hex()))
    return entries


def task(entries, session="study-1/x", round=2, task_id=7):
    return TaskAssignment(task_id=task_id, study_id=1, round=round, analysis="glm", params={},
                          purpose="research", consumer="alice",
                          secure=SecureRound(session_id=session, roster=entries))


def summable(value):
    return Summable({"columns": ["x"]}, {"n": np.asarray([value])}, frozenset({"n"}))


def test_two_real_nodes_and_a_peer_mask_so_that_only_the_sum_decodes(nodes):
    states, peer_key = nodes
    private, prekey = make_prekey("c", peer_key)
    entries = roster(states, peer_key, peer_prekey=(private, prekey))
    assignment = task(entries)
    partials = {name: secagg.masker_for(state, assignment, name)(summable(10 + i))
                for i, (name, state) in enumerate(states.items())}
    peers = verify_prekey_roster([(e.prekey, e.node_key) for e in entries])
    partials["c"] = pack(summable(5), mask({"n": np.asarray([5])}, node="c", private_key=private,
                                           peers=peers, session_id="study-1/x", round=2))
    payloads = [MaskedPayload.model_validate(p["secure"]["masked"]) for p in partials.values()]
    assert unmask_sum(aggregate(payloads), integer={"n"})["n"].tolist() == [26]
    with pytest.raises(Exception, match="missing masked payloads from c"):
        combine_masked(None, {k: v for k, v in partials.items() if k != "c"}, None, {}, 2)  # type: ignore[arg-type]


def test_a_round_is_masked_once_and_a_prekey_serves_one_session(nodes):
    states, peer_key = nodes
    entries = roster(states, peer_key)
    seal = secagg.masker_for(states["a"], task(entries), "a")
    seal(summable(1))
    with pytest.raises(Refused, match="already masked"):
        secagg.masker_for(states["a"], task(entries, task_id=8), "a")(summable(2))
    secagg.masker_for(states["a"], task(entries, round=3), "a")(summable(2))  # next round: ok
    with pytest.raises(RosterError, match="already bound to session"):
        secagg.masker_for(states["a"], task(entries, session="study-1/other"), "a")


def test_forged_foreign_and_swapped_rosters_are_refused(nodes):
    states, peer_key = nodes
    entries = roster(states, peer_key)
    forged = entries[2].model_copy(update={"node_key": SigningKey.generate().verify_key.encode()
                                           .hex()})
    with pytest.raises(RosterError, match="bad prekey signature for node c"):
        secagg.masker_for(states["a"], task([entries[0], entries[1], forged]), "a")
    signer = SigningKey.generate()
    _, stranger = make_prekey("a", signer)  # not a key node a ever made
    fake_own = RosterEntry(prekey=stranger, node_key=signer.verify_key.encode().hex())
    with pytest.raises(RosterError, match="never made"):
        secagg.masker_for(states["a"], task([fake_own, entries[1], entries[2]]), "a")
    with pytest.raises(RosterError, match="not in the roster"):
        secagg.masker_for(states["a"], task([entries[1], entries[2]]), "a")
    # c's node key is now pinned at a; a hub that later swaps in another key for c is caught.
    secagg.masker_for(states["a"], task(entries), "a")
    other = SigningKey.generate()
    _, swapped = make_prekey("c", other)
    again = roster(states, peer_key)[:2] + [
        RosterEntry(prekey=swapped, node_key=other.verify_key.encode().hex())]
    with pytest.raises(RosterError, match="different node key for c"):
        secagg.masker_for(states["a"], task(again, session="study-2/y"), "a")
    assert secagg.forget_peer(states["a"], "c")
    secagg.masker_for(states["a"], task(again, session="study-2/y"), "a")


def test_session_keys_are_deleted_a_day_later(nodes):
    states, peer_key = nodes
    entries = roster(states, peer_key)
    secagg.masker_for(states["a"], task(entries), "a")
    assert secagg.prune(states["a"]) == 0
    states["a"].clock.advance(days=1, seconds=1)  # type: ignore[attr-defined]
    assert secagg.prune(states["a"]) == 1
    with pytest.raises(RosterError, match="was deleted"):
        secagg.masker_for(states["a"], task(entries, round=5), "a")
