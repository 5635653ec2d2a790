"""Diffie–Hellman PSI: exact results against Python sets, what a relay sees, framing errors."""

from __future__ import annotations

import hashlib
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from healthspace.cdm.synth import pseudonym
from healthspace.core.errors import InvalidInput
from healthspace.privacy.psi import (
    DigestTable,
    Mode,
    PsiReceiver,
    PsiSender,
    Transcript,
    run_psi,
)
from healthspace.privacy.psi_crypto import DIGEST, hash_to_u, point_mul
from healthspace.privacy.psi_wire import HEADER_SIZE, Kind, decode_frame, encode_frame


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


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("case", CASES)
def test_exact_against_python_sets(case: str, mode: Mode) -> None:
    a, b = CASES[case]
    result = run_psi(a, b, mode, batch_size=64, workers=0)
    truth = set(a) & set(b)
    assert result.size == len(truth)
    assert (result.receiver_count, result.sender_count) == (len(set(a)), len(set(b)))
    if mode is Mode.MEMBERSHIP:
        assert result.members is not None
        assert sorted(result.members) == sorted(truth)
    else:
        assert result.members is None


@pytest.mark.parametrize("mode", list(Mode))
def test_small_batches_and_worker_processes(mode: Mode) -> None:
    a, b = _sets(3, 1000, 700, 333)
    transcript = Transcript()
    result = run_psi(a, b, mode, batch_size=97, workers=2, transcript=transcript)
    assert result.size == 333
    kinds = [decode_frame(f).kind for f in transcript.frames]
    assert kinds.count(Kind.SENDER_BLINDED) == -(-700 // 97)
    assert kinds.count(Kind.RECEIVER_BLINDED) == -(-1000 // 97)
    if mode is Mode.MEMBERSHIP:
        assert set(result.members or []) == set(a) & set(b)


def test_network_pseudonyms_link_across_hospitals() -> None:
    nids = [f"{i:09d}" for i in range(400)]
    hospital_1, hospital_2 = pseudonym(nids[:250]), pseudonym(nids[180:])
    result = run_psi(hospital_1, hospital_2, Mode.MEMBERSHIP, workers=0)
    assert sorted(result.members or []) == sorted(set(hospital_1) & set(hospital_2))


def test_scalar_multiplication_commutes() -> None:
    for _ in range(20):
        a, b, u = os.urandom(32), os.urandom(32), hash_to_u(os.urandom(8).hex())
        assert point_mul(b, point_mul(a, u)) == point_mul(a, point_mul(b, u))
    x = X25519PrivateKey.generate()
    y = X25519PrivateKey.generate()
    assert x.exchange(y.public_key()) == y.exchange(x.public_key())


def test_hash_to_u_is_domain_separated_and_canonical() -> None:
    u = hash_to_u("Zoë")
    assert len(u) == 32 and u[31] < 0x80
    assert u != hashlib.sha512("Zoë".encode()).digest()[:32]
    X25519PublicKey.from_public_bytes(u)


def test_small_order_point_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="small-order"):
        point_mul(os.urandom(32), bytes(32))


def _fingerprints(ident: str) -> list[bytes]:
    raw = ident.encode()
    return [raw, hashlib.sha256(raw).digest()[:12], hashlib.sha512(raw).digest()[:12],
            hash_to_u(ident)[:12]]


def test_relay_sees_neither_ids_nor_hashes_and_sessions_differ() -> None:
    a, b = _sets(4, 60, 50, 20)
    first, second = Transcript(), Transcript()
    run_psi(a, b, Mode.MEMBERSHIP, workers=0, transcript=first)
    run_psi(a, b, Mode.MEMBERSHIP, workers=0, transcript=second)
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
    offsets = {"version": 4, "mode": 5, "kind": 6, "flags": 7}
    for name, value in changes.items():
        frame[offsets[name]] = value
    return bytes(frame)


@pytest.mark.parametrize(("data", "message"), [
    (_frame()[:-1], "truncated"),
    (_frame() + b"\0" * 32, "truncated or padded"),
    (_frame()[:10], "shorter than its header"),
    (_frame(version=2), "version 2"),
    (_frame(mode=9), "unknown PSI mode"),
    (_frame(flags=0x80), "flags"),
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
