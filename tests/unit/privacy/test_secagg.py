"""Secure aggregation: exact sums, uniform payloads, signed rosters, overflow and dropouts."""

import base64
import json
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl.signing import SigningKey
from scipy import stats

from healthspace.core.errors import Conflict, InvalidInput
from healthspace.privacy import secagg_ring as ring
from healthspace.privacy.secagg import (
    DropoutError,
    MaskedPayload,
    Participant,
    aggregate,
    unmask_sum,
)
from healthspace.privacy.secagg_keys import RosterError, announcement_for

MASK64 = 2**64 - 1


def names(n):
    return [f"site-{i:02d}" for i in range(n)]


def node_keys(nodes, seed=0):
    return {n: SigningKey(bytes([seed, i + 1]) * 16) for i, n in enumerate(nodes)}


def registered(keys):
    return {n: k.verify_key.encode().hex() for n, k in keys.items()}


def session(nodes, session_id="study-1", *, pinned=False, seed=0):
    """Participants that have all accepted the relayed, verified roster."""
    keys = node_keys(nodes, seed)
    parts = {}
    for i, n in enumerate(nodes):
        extra = {"private_key": X25519PrivateKey.from_private_bytes(bytes([seed, i + 7]) * 16)}
        parts[n] = Participant(session_id, n, keys[n], **(extra if pinned else {}))
    roster = [p.announcement for p in parts.values()]
    for p in parts.values():
        p.accept_roster(roster, registered(keys))
    return parts


def run_round(parts, inputs, round=0, **kwargs):
    payloads = [parts[n].mask(round, vectors, **kwargs) for n, vectors in inputs.items()]
    # what the hub stores and reads back: JSON text
    stored = [MaskedPayload.model_validate_json(p.model_dump_json()) for p in payloads]
    return payloads, aggregate(stored)


def mixed_vectors(rng, n, m):
    """Magnitudes 1e-6 … 1e15, mixed signs, plus coordinates with only small values."""
    out = []
    for _ in range(n):
        mag = 10.0 ** rng.uniform(-6, 15, m)
        x = rng.choice([-1.0, 1.0], m) * mag * rng.uniform(0.5, 1.0, m)
        x[: m // 4] = rng.standard_normal(m // 4) * 1e-3
        out.append(x)
    return out


def to_int(r):
    return [int(hi) << 64 | int(lo) for lo, hi in r]


# --- ring and codec ----------------------------------------------------------------------


def test_ring_add_neg_sub_match_python_integers_with_carries():
    rng = np.random.default_rng(1)
    a = rng.integers(0, MASK64, (500, 2), dtype=np.uint64, endpoint=True)
    b = rng.integers(0, MASK64, (500, 2), dtype=np.uint64, endpoint=True)
    a[:5] = MASK64  # force carries out of both limbs
    b[:5, 0] = 1
    mod = 2**128
    assert to_int(ring.add(a, b)) == [(x + y) % mod for x, y in zip(to_int(a), to_int(b))]
    assert to_int(ring.sub(a, b)) == [(x - y) % mod for x, y in zip(to_int(a), to_int(b))]
    assert to_int(ring.neg(a)) == [(-x) % mod for x in to_int(a)]


def test_encoding_is_round_of_x_times_two_to_the_f_in_twos_complement():
    x = np.array([0.0, 1.5, -1.5, 2.0**-41, -3.0 * 2.0**-41, 1e15, -1e15, 2.0**80, 7])
    got = to_int(ring.encode(x, parties=2))
    want = [round(v * 2**40) % 2**128 for v in x.tolist()]
    assert got == want
    assert ring.decode(ring.encode(x, parties=2)).tolist() == [
        0.0, 1.5, -1.5, 0.0, -2.0**-39, 1e15, -1e15, 2.0**80, 7.0]  # halves tie to even


@pytest.mark.parametrize("n", [2, 3, 10])
def test_sum_matches_fsum_within_the_documented_bound(n):
    rng = np.random.default_rng(n)
    nodes = names(n)
    xs = mixed_vectors(rng, n, 2000)
    _, agg = run_round(session(nodes), {nd: {"v": x} for nd, x in zip(nodes, xs)})
    got = unmask_sum(agg)["v"]
    exact = np.array([math.fsum(col) for col in zip(*xs)])
    bound = ring.error_bound(n) + 2 * np.spacing(np.abs(exact))
    assert np.all(np.abs(got - exact) <= bound)
    small = np.abs(exact) < 1.0
    assert np.max(np.abs(got - exact)[small]) <= ring.error_bound(n) < 1e-11


@pytest.mark.parametrize("n", [2, 3, 10])
def test_counts_and_matrices_sum_exactly(n):
    rng = np.random.default_rng(100 + n)
    nodes = names(n)
    counts = [rng.integers(0, 10**6, 50) for _ in nodes]
    xtwx = [rng.standard_normal((4, 4)).round(3) * 1e9 for _ in nodes]
    inputs = {nd: {"count": c, "xtwx": m} for nd, c, m in zip(nodes, counts, xtwx)}
    _, agg = run_round(session(nodes), inputs)
    out = unmask_sum(agg, integer={"count"})
    assert out["count"].dtype == np.int64
    assert np.array_equal(out["count"], np.sum(counts, axis=0))
    assert out["xtwx"].shape == (4, 4)
    exact = np.array([math.fsum(v) for v in zip(*(m.ravel() for m in xtwx))]).reshape(4, 4)
    assert np.all(np.abs(out["xtwx"] - exact) <= ring.error_bound(n) + np.spacing(np.abs(exact)))


@pytest.mark.parametrize("scale_bits", [0, 20, 52, 63])
def test_other_scales_round_trip_and_int_decoding_is_exact(scale_bits):
    counts = np.array([0, 1, -5, 2**40, -(2**52)])
    r = ring.encode(counts, parties=2, scale_bits=scale_bits)
    assert np.array_equal(ring.decode_int(r, scale_bits=scale_bits), counts)
    assert np.array_equal(ring.decode(r, scale_bits=scale_bits), counts.astype(float))
    if scale_bits:
        with pytest.raises(InvalidInput, match="not a sum of integers"):
            ring.decode_int(ring.encode([0.5], parties=2, scale_bits=scale_bits),
                            scale_bits=scale_bits, name="n")


def test_values_that_could_overflow_the_sum_are_refused_by_name():
    limit = ring.max_abs(3)
    assert limit == 2.0 ** 86 / 3
    parts = session(names(3))
    with pytest.raises(InvalidInput, match="xtwx.*beyond the secure-aggregation limit"):
        parts["site-00"].mask(0, {"n": [1], "xtwx": [limit * 1.01]})
    with pytest.raises(InvalidInput, match="NaN"):
        ring.encode([np.nan], parties=3, name="grad")
    with pytest.raises(InvalidInput, match="2\\^53"):
        ring.encode(np.array([2**60]), parties=3, name="count")


def test_sums_near_the_limit_still_decode_exactly():
    big = ring.max_abs(3) * 0.99
    x = [np.array([big, -big, 1.0]) for _ in range(3)]
    total = ring.zeros(3)
    for v in x:
        total = ring.add(total, ring.encode(v, parties=3))
    assert np.array_equal(ring.decode(total), np.array([3 * big, -3 * big, 3.0]))


# --- privacy of what the hub stores -------------------------------------------------------


def hub_payload_bytes(n_coords=6250):
    """Node 1's stored payload for a highly structured input (small counts): 1e5 bytes."""
    nodes = names(3)
    data = np.random.default_rng(7).poisson(3, size=n_coords)
    inputs = {nd: {"count": data} for nd in nodes}
    payloads, _ = run_round(session(nodes, pinned=True), inputs)
    return base64.b64decode(payloads[1].vectors["count"].data), data


def test_a_stored_payload_is_uniform_bytes():
    raw, _ = hub_payload_bytes()
    assert len(raw) == 100_000
    counts = np.bincount(np.frombuffer(raw, dtype=np.uint8), minlength=256)
    chi2, p = stats.chisquare(counts)
    assert p > 1e-4, (chi2, p)


def test_every_bit_of_a_stored_payload_is_balanced():
    raw, _ = hub_payload_bytes()
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8).reshape(-1, 16), axis=1)
    ones = bits.sum(axis=0)  # 128 bit positions over 6250 coordinates
    m = bits.shape[0]
    chi2 = float(np.sum((ones - m / 2) ** 2 / (m / 4)))
    assert stats.chi2.sf(chi2, df=128) > 1e-4, chi2


def test_one_payload_alone_decodes_to_noise():
    raw, data = hub_payload_bytes()
    alone = ring.decode(ring.from_bytes(raw, data.size))
    assert np.median(np.abs(alone - data)) > 1e20  # masks are uniform over ±2^87


def test_the_same_input_masked_in_two_sessions_or_rounds_differs():
    nodes = names(2)
    x = {"v": np.arange(100.0)}
    a = session(nodes, "study-1", seed=1)["site-00"].mask(0, x)
    b = session(nodes, "study-2", seed=1)["site-00"].mask(0, x)
    parts = session(nodes, "study-1", seed=1)
    c = parts["site-00"].mask(1, x)
    assert len({a.vectors["v"].data, b.vectors["v"].data, c.vectors["v"].data}) == 3


def test_the_wire_carries_base64_not_numbers():
    payloads, _ = run_round(session(names(2)), {n: {"v": [1.25, 2.5]} for n in names(2)})
    body = json.loads(payloads[0].model_dump_json())
    assert body["version"] == 1 and body["scale_bits"] == 40
    assert body["roster"] == ["site-00", "site-01"]
    assert body["vectors"]["v"]["ring_bits"] == 128 and body["vectors"]["v"]["scale_bits"] is None
    assert isinstance(body["vectors"]["v"]["data"], str)
    assert len(base64.b64decode(body["vectors"]["v"]["data"])) == 32


# --- the compact ring Z_2^64 --------------------------------------------------------------


def test_compact_labels_sum_exactly_in_half_the_bytes():
    rng = np.random.default_rng(5)
    nodes = names(10)
    inputs = {n: {"big": rng.normal(0, 1e6, 5000), "x": rng.normal(size=3)} for n in nodes}
    bound = max(float(np.max(np.abs(v["big"]))) for v in inputs.values())
    f = ring.compact_scale(bound, len(nodes))
    payloads, agg = run_round(session(nodes), inputs, compact={"big": f})
    body = json.loads(payloads[0].model_dump_json())["vectors"]
    assert body["big"]["ring_bits"] == 64 and body["big"]["scale_bits"] == f
    assert len(base64.b64decode(body["big"]["data"])) == 8 * 5000
    sums = unmask_sum(agg)
    exact = [math.fsum(v["big"][i] for v in inputs.values()) for i in range(5000)]
    # error ≤ parties · 2^-(F+1) fixed-point rounding + the one final float64 rounding
    exact_arr = np.asarray(exact)
    slack = len(nodes) * 2.0 ** -(f + 1) + np.spacing(np.abs(exact_arr))
    assert np.all(np.abs(sums["big"] - exact_arr) <= slack)
    assert np.max(np.abs(sums["big"] - exact_arr)) < 1e-8
    assert sums["x"].shape == (3,)  # other labels stay in Z_2^128


def test_compact_ring_refuses_values_beyond_the_agreed_bound():
    parts = session(names(2))
    f = ring.compact_scale(10.0, 2)
    with pytest.raises(InvalidInput, match="beyond the agreed compact-ring bound") as info:
        parts["site-00"].mask(0, {"big": [1e30]}, compact={"big": f})
    assert info.value.field == "big"


def test_a_payload_on_another_ring_is_refused():
    parts = session(names(2))
    a = parts["site-00"].mask(0, {"v": [1.0]}, compact={"v": 20})
    b = parts["site-01"].mask(0, {"v": [1.0]})
    with pytest.raises(InvalidInput, match="other vectors, shapes or rings"):
        aggregate([a, b])


# --- roster signatures ---------------------------------------------------------------------


def test_a_swapped_session_key_is_rejected():
    nodes = names(3)
    keys = node_keys(nodes)
    parts = [Participant("s", n, keys[n]) for n in nodes]
    roster = [p.announcement for p in parts]
    attacker = announcement_for(X25519PrivateKey.generate(), "s", "site-01", SigningKey.generate())
    forged = roster[1].model_copy(update={"public_key": attacker.public_key})
    for bad in (forged, attacker):
        with pytest.raises(RosterError, match="bad roster signature for node site-01"):
            parts[0].accept_roster([roster[0], bad, roster[2]], registered(keys))


def test_roster_rejects_other_sessions_unknown_and_repeated_nodes():
    nodes = names(2)
    keys = node_keys(nodes)
    parts = [Participant("s", n, keys[n]) for n in nodes]
    roster = [p.announcement for p in parts]
    other = Participant("other", "site-01", keys["site-01"]).announcement
    with pytest.raises(RosterError, match="session other"):
        parts[0].accept_roster([roster[0], other], registered(keys))
    with pytest.raises(RosterError, match="not registered"):
        parts[0].accept_roster(roster, {"site-00": registered(keys)["site-00"]})
    with pytest.raises(RosterError, match="twice"):
        parts[0].accept_roster([roster[0], roster[0], roster[1]], registered(keys))
    with pytest.raises(RosterError, match="at least 2"):
        parts[0].accept_roster([roster[0]], registered(keys))


def test_a_node_rejects_a_roster_without_its_own_key():
    nodes = names(2)
    keys = node_keys(nodes)
    parts = [Participant("s", n, keys[n]) for n in nodes]
    replaced = Participant("s", "site-00", keys["site-00"]).announcement  # a second key
    with pytest.raises(RosterError, match="own session key"):
        parts[0].accept_roster([replaced, parts[1].announcement], registered(keys))


def test_a_round_is_masked_only_once():
    parts = session(names(2))
    parts["site-00"].mask(0, {"v": [1.0]})
    with pytest.raises(Conflict, match="already masked"):
        parts["site-00"].mask(0, {"v": [2.0]})


# --- hub checks and dropouts -----------------------------------------------------------


def test_a_dropout_names_the_node_and_a_rerun_without_it_is_exact():
    nodes = names(4)
    xs = {n: {"v": np.full(10, float(i + 1))} for i, n in enumerate(nodes)}
    parts = session(nodes, "study-1")
    sent = [parts[n].mask(0, xs[n]) for n in nodes if n != "site-02"]
    with pytest.raises(DropoutError, match="site-02") as err:
        aggregate(sent)
    assert err.value.missing == ("site-02",)
    # the survivors' payloads alone are noise: their masks with site-02 do not cancel
    partial = ring.zeros(10)
    for p in sent:
        partial = ring.add(partial, p.vectors["v"].to_ring())
    assert np.all(np.abs(ring.decode(partial) - 8.0) > 1e6)
    # rerun: a new session (new keys) for the survivors only
    survivors = [n for n in nodes if n not in err.value.missing]
    _, agg = run_round(session(survivors, "study-1/rerun-1"), {n: xs[n] for n in survivors})
    assert np.array_equal(unmask_sum(agg)["v"], np.full(10, 1.0 + 2.0 + 4.0))


def test_aggregate_rejects_mismatched_or_foreign_payloads():
    nodes = names(2)
    parts = session(nodes)
    a = parts["site-00"].mask(0, {"v": [1.0, 2.0]})
    b = parts["site-01"].mask(0, {"v": [1.0]})
    with pytest.raises(InvalidInput, match="other vectors, shapes or rings"):
        aggregate([a, b])
    with pytest.raises(InvalidInput, match="repeated"):
        aggregate([a, a])
    c = parts["site-01"].mask(1, {"v": [1.0, 2.0]})
    with pytest.raises(InvalidInput, match="another session, round"):
        aggregate([a, c])
    with pytest.raises(InvalidInput, match="bytes"):
        short = b.vectors["v"].model_copy(update={"shape": [2]})  # 16 bytes for 2 values
        aggregate([a, c.model_copy(update={"round": 0, "vectors": {"v": short}})])


def test_masking_a_hundred_thousand_values_for_ten_parties():
    nodes = names(10)
    rng = np.random.default_rng(3)
    xs = {n: {"hessian": rng.standard_normal(100_000) * 1e12} for n in nodes}
    _, agg = run_round(session(nodes), xs)
    got = unmask_sum(agg)["hessian"]
    exact = np.array([math.fsum(c) for c in zip(*(v["hessian"] for v in xs.values()))])
    assert np.all(np.abs(got - exact) <= ring.error_bound(10) + 2 * np.spacing(np.abs(exact)))
