"""Diffie–Hellman PSI: exact results against Python sets, what a relay sees, framing errors."""

from __future__ import annotations

import hashlib
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_scalarmult_ed25519_base_noclamp,
)

from healthspace.cdm.synth import pseudonym
from healthspace.core.errors import InvalidInput
from healthspace.privacy import psi_crypto
from healthspace.privacy.psi import (
    DigestTable,
    Group,
    Mode,
    PsiReceiver,
    PsiSender,
    Transcript,
    run_psi,
)
from healthspace.privacy.psi_crypto import (
    DIGEST,
    hash_mul,
    hash_to_point,
    hash_to_u,
    new_scalar,
    point_mul,
)
from healthspace.privacy.psi_wire import HEADER_SIZE, Kind, decode_frame, encode_frame

GROUPS = [pytest.param(g, id=g.name.lower()) for g in Group]
ELL = 2**252 + 27742317777372353535851937790883648493  # order of the edwards25519 prime subgroup


def _sets(seed: int, n_a: int, n_b: int, shared: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pool = [f"id-{rng.getrandbits(64):016x}" for _ in range(n_a + n_b)]
    a = pool[:n_a]
    b = rng.sample(a, shared) + pool[n_a:n_a + n_b - shared]
    rng.shuffle(b)
    return a, b


CASES = {
    "overlap": _sets(1, 300, 200, 57),
    "empty receiver": ([], ["x", "y"]),
    "empty sender": (["x", "y"], []),
    "both empty": ([], []),
    "disjoint": _sets(2, 120, 80, 0),
    "identical": (["a", "b", "c"], ["c", "b", "a"]),
    "duplicates": (["a", "a", "b", "c", "c", "c"], ["c", "c", "a", "z", "z"]),
    "non-ascii": (["Zoë", "Ångström", "李雷", "🙂", "zoe"], ["李雷", "Zoë", "Zoe\u0308"]),
}


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("case", CASES)
def test_exact_against_python_sets(case: str, mode: Mode, group: Group) -> None:
    a, b = CASES[case]
    result = run_psi(a, b, mode, batch_size=64, workers=0, group=group)
    truth = set(a) & set(b)
    assert result.size == len(truth)
    assert (result.receiver_count, result.sender_count) == (len(set(a)), len(set(b)))
    if mode is Mode.MEMBERSHIP:
        assert result.members is not None
        assert sorted(result.members) == sorted(truth)
    else:
        assert result.members is None


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("mode", list(Mode))
def test_small_batches_and_worker_processes(mode: Mode, group: Group) -> None:
    a, b = _sets(3, 600, 400, 133)
    transcript = Transcript()
    result = run_psi(a, b, mode, batch_size=97, workers=2, transcript=transcript, group=group)
    assert result.size == 133
    frames = [decode_frame(f) for f in transcript.frames]
    assert {f.group for f in frames} == {group}
    kinds = [f.kind for f in frames]
    assert kinds.count(Kind.SENDER_BLINDED) == -(-400 // 97)
    assert kinds.count(Kind.RECEIVER_BLINDED) == -(-600 // 97)
    if mode is Mode.MEMBERSHIP:
        assert set(result.members or []) == set(a) & set(b)


def test_network_pseudonyms_link_across_hospitals() -> None:
    nids = [f"{i:09d}" for i in range(400)]
    hospital_1, hospital_2 = pseudonym(nids[:250]), pseudonym(nids[180:])
    result = run_psi(hospital_1, hospital_2, Mode.MEMBERSHIP, workers=0)
    assert sorted(result.members or []) == sorted(set(hospital_1) & set(hospital_2))


@pytest.mark.parametrize("group", GROUPS)
def test_scalar_multiplication_commutes(group: Group) -> None:
    for n in range(20):
        a, b, ident = new_scalar(group), new_scalar(group), [f"id-{n}"]
        ab = point_mul(b, hash_mul(a, ident, group), group=group)
        assert ab == point_mul(a, hash_mul(b, ident, group), group=group)
        assert ab != hash_mul(a, ident, group)
    x = X25519PrivateKey.generate()
    y = X25519PrivateKey.generate()
    assert x.exchange(y.public_key()) == y.exchange(x.public_key())


def test_ed25519_scalars_are_reduced_and_nonzero() -> None:
    for _ in range(50):
        k = int.from_bytes(new_scalar(Group.ED25519), "little")
        assert 0 < k < ELL


def test_hash_to_point_lands_in_the_prime_order_subgroup() -> None:
    ids = ["Zoë", "", "a", *(os.urandom(8).hex() for _ in range(200))]
    points = [hash_to_point(i) for i in ids]
    assert all(crypto_core_ed25519_is_valid_point(p) for p in points)
    assert len(set(points)) == len(points)
    assert hash_to_point("Zoë") == hash_to_point("Zoë")
    assert hash_to_point("Zoë") != hashlib.sha512("Zoë".encode()).digest()[:32]
    # blinded points stay in the subgroup (libsodium checks it on every multiplication)
    assert crypto_core_ed25519_is_valid_point(hash_mul(new_scalar(), ["Zoë"]))


def test_public_bindings_fallback_gives_the_same_points(monkeypatch: pytest.MonkeyPatch) -> None:
    k, ids = new_scalar(), ["a", "b", "Zoë"]
    fast = hash_mul(k, ids), point_mul(k, hash_mul(k, ids), DIGEST)
    monkeypatch.setattr(psi_crypto, "_lib", None)
    assert (hash_mul(k, ids), point_mul(k, hash_mul(k, ids), DIGEST)) == fast
    with pytest.raises(InvalidInput, match="item 1 is not a valid ed25519 point"):
        point_mul(k, fast[0][:32] + bytes(32))


def test_hash_to_u_is_domain_separated_and_canonical() -> None:
    u = hash_to_u("Zoë")
    assert len(u) == 32 and u[31] < 0x80
    assert u != hashlib.sha512("Zoë".encode()).digest()[:32]
    X25519PublicKey.from_public_bytes(u)


def test_small_order_point_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="item 1 is a small-order"):
        point_mul(os.urandom(32), hash_to_u("x") + bytes(32), group=Group.X25519)


_P = 2**255 - 19
_G = crypto_scalarmult_ed25519_base_noclamp((1).to_bytes(32, "little"))
_ORDER_2 = (_P - 1).to_bytes(32, "little")  # (0, -1): small order
BAD_POINTS = {
    "identity": (1).to_bytes(32, "little"),
    "all zero": bytes(32),
    "small order": _ORDER_2,
    "non-canonical": (_P + 1).to_bytes(32, "little"),  # y = p + 1 ≡ 1
    "off curve": (2).to_bytes(32, "little"),  # y = 2: x² is not a square
    "outside the subgroup": crypto_core_ed25519_add(_G, _ORDER_2),
}


@pytest.mark.parametrize("bad", BAD_POINTS)
def test_invalid_ed25519_points_are_rejected_naming_the_batch(bad: str) -> None:
    point = BAD_POINTS[bad]
    assert not crypto_core_ed25519_is_valid_point(point)
    with pytest.raises(InvalidInput, match="item 2 is not a valid ed25519 point"):
        point_mul(new_scalar(), hash_to_point("a") * 2 + point)
    receiver = PsiReceiver(["a"], Mode.SIZE, workers=0)
    sender = PsiSender(["a", "b"], Mode.SIZE, workers=0, batch_size=1)
    frames = list(sender.blinded_frames())
    receiver.absorb_offer(frames[0])
    forged = frames[1][:HEADER_SIZE] + point
    with pytest.raises(InvalidInput, match="SENDER_BLINDED frame 1: item 0 is not a valid"):
        receiver.absorb_offer(forged)
    request = next(PsiReceiver(["a"], Mode.SIZE, workers=0).request_frames())
    with pytest.raises(InvalidInput, match="RECEIVER_BLINDED frame 0: item 0 is not a valid"):
        PsiSender(["a"], Mode.SIZE, workers=0).answer(request[:HEADER_SIZE] + point)


def test_mismatched_groups_are_refused() -> None:
    receiver = PsiReceiver(["a"], Mode.SIZE, workers=0)  # default: ed25519
    offer = next(PsiSender(["a"], Mode.SIZE, workers=0, group="x25519").blinded_frames())
    with pytest.raises(InvalidInput, match="group x25519, session uses ed25519"):
        receiver.absorb_offer(offer)
    with pytest.raises(InvalidInput, match="unknown PSI group"):
        PsiReceiver(["a"], Mode.SIZE, workers=0, group="p256")


def _fingerprints(ident: str) -> list[bytes]:
    raw = ident.encode()
    return [raw, hashlib.sha256(raw).digest()[:12], hashlib.sha512(raw).digest()[:12],
            hash_to_u(ident)[:12], hash_to_point(ident)[:12]]


@pytest.mark.parametrize("group", GROUPS)
def test_relay_sees_neither_ids_nor_hashes_and_sessions_differ(group: Group) -> None:
    a, b = _sets(4, 60, 50, 20)
    first, second = Transcript(), Transcript()
    run_psi(a, b, Mode.MEMBERSHIP, workers=0, transcript=first, group=group)
    run_psi(a, b, Mode.MEMBERSHIP, workers=0, transcript=second, group=group)
    seen = b"".join(first.frames)
    for ident in a + b:
        for needle in _fingerprints(ident):
            assert needle not in seen
    payloads = [f[HEADER_SIZE:] for f in first.frames]
    assert all(p not in b"".join(second.frames) for p in payloads if p)


def test_size_mode_hides_order() -> None:
    a = [f"p{i}" for i in range(400)]
    receiver = PsiReceiver(a, Mode.SIZE, workers=0)
    sender = PsiSender(a, Mode.SIZE, workers=0)
    for frame in sender.blinded_frames():
        receiver.absorb_offer(frame)
    (request,) = receiver.request_frames()
    sent = decode_frame(request).payload
    replies = sender.answer(request)
    returned = b"".join(decode_frame(r).payload for r in replies)
    in_order = point_mul(sender._blinder._scalar, sent, DIGEST)  # what an ordered reply would be
    assert sorted(_chunks(returned)) == sorted(_chunks(in_order))
    assert returned != in_order
    key = [struct.unpack("<QQ", c) for c in _chunks(returned)]
    assert key == sorted(key)  # canonical order: sorted by value, a function of the set only


def _chunks(blob: bytes) -> list[bytes]:
    return [blob[i:i + DIGEST] for i in range(0, len(blob), DIGEST)]


def test_digest_table_handles_duplicate_high_halves() -> None:
    rows = [struct.pack("<QQ", 7, lo) for lo in (5, 1, 9, 1)] + [struct.pack("<QQ", 3, 3)]
    table = DigestTable(b"".join(rows))
    assert len(table) == 4
    query = b"".join(struct.pack("<QQ", hi, lo) for hi, lo in [(7, 9), (7, 2), (3, 3), (4, 3)])
    assert table.contains(query).tolist() == [True, False, True, False]


def _frame(**changes: int) -> bytes:
    frame = bytearray(encode_frame(Mode.SIZE, Kind.SENDER_BLINDED, 0, bytes(64), last=True))
    offsets = {"version": 4, "group": 5, "mode": 6, "kind": 7, "flags": 8, "reserved": 9}
    for name, value in changes.items():
        frame[offsets[name]] = value
    return bytes(frame)


@pytest.mark.parametrize(("data", "message"), [
    (_frame()[:-1], "truncated"),
    (_frame() + b"\0" * 32, "truncated or padded"),
    (_frame()[:10], "shorter than its header"),
    (_frame(version=1), "version 1"),
    (_frame(group=3), "unknown PSI group 3"),
    (_frame(mode=9), "unknown PSI mode"),
    (_frame(flags=0x80), "flags"),
    (_frame(reserved=1), "reserved"),
    (b"XXXX" + _frame()[4:], "magic"),
])
def test_framing_errors(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_frame(data)


def test_protocol_errors_are_invalid_input() -> None:
    receiver = PsiReceiver(["a"], Mode.MEMBERSHIP, workers=0)
    offer = next(PsiSender(["a"], Mode.MEMBERSHIP, workers=0).blinded_frames())
    size_offer = next(PsiSender(["a"], Mode.SIZE, workers=0).blinded_frames())
    with pytest.raises(InvalidInput, match="mode"):
        receiver.absorb_offer(size_offer)
    receiver.absorb_offer(offer)
    with pytest.raises(InvalidInput, match="out of order"):
        receiver.absorb_offer(offer)
    with pytest.raises(InvalidInput, match="not finished"):
        receiver.result()
    with pytest.raises(InvalidInput, match="expected a DOUBLE_BLINDED"):
        receiver.absorb_answer(offer)
