"""Secure aggregation: pairwise-masked fixed-point vectors whose masks cancel in the hub's sum.

Protocol for one session (a roster of n ≥ 2 nodes) and one or more rounds:

1. each node :class:`Participant` makes an X25519 key pair and a signed :class:`Announcement`;
   the hub relays all announcements; every node runs ``accept_roster`` (signatures checked
   against the registered Ed25519 node keys);
2. per round, every node calls ``mask``: each labelled vector is encoded into Z_2^128
   (:mod:`secagg_ring`), and for every peer j a ChaCha20 keystream keyed by the pair's HKDF seed
   is added (j after this node in name order) or subtracted (j before);
3. the hub calls :func:`aggregate` on the n payloads: the masks cancel and the ring sum is the
   plain fixed-point sum; :func:`unmask_sum` decodes it to float64 (or exact int64).

A missing payload makes :func:`aggregate` raise :class:`DropoutError`; the caller reruns the
round in a new session without the missing nodes (see docs/secure-aggregation.md for why).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from nacl.signing import SigningKey
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from healthspace.core.canonical import canonical_json
from healthspace.core.errors import Conflict, InvalidInput
from healthspace.privacy import secagg_ring as ring
from healthspace.privacy.secagg_keys import (
    Announcement,
    RosterError,
    announcement_for,
    pair_seed,
    public_hex,
    verify_roster,
)

WIRE_VERSION: Literal[1] = 1
_MAX_COORDINATES = 50_000_000


class DropoutError(Conflict):
    """Masked payloads are missing, so the masks cannot cancel; rerun without ``missing``."""

    def __init__(self, missing: Sequence[str], *, session_id: str, round: int) -> None:
        self.missing = tuple(sorted(missing))
        super().__init__(
            f"secure-aggregation session {session_id} round {round} is missing masked payloads "
            f"from {', '.join(self.missing)}; rerun the round in a new session without them",
            field="payloads",
        )


class MaskedVector(BaseModel):
    """One masked vector, base64 (never JSON numbers): 16 little-endian bytes per coordinate
    in Z_2^128, or 8 in the compact ring Z_2^64 with its own agreed ``scale_bits``."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(max_length=8)
    data: str
    ring_bits: Literal[64, 128] = 128
    scale_bits: int | None = Field(default=None, ge=-ring.MAX_SCALE_BITS,
                                   le=ring.MAX_SCALE_BITS,
                                   description="compact ring only: this vector's scale")

    @property
    def size(self) -> int:
        m = int(np.prod(self.shape, dtype=np.int64))
        if any(n < 0 for n in self.shape) or m > _MAX_COORDINATES:
            raise InvalidInput(f"bad masked vector shape {self.shape}", field="shape")
        return m

    def to_ring(self) -> ring.Ring:
        return ring.from_bytes(base64.b64decode(self.data, validate=True), self.size)

    def to_ring64(self) -> ring.Ring64:
        raw = base64.b64decode(self.data, validate=True)
        if len(raw) != 8 * self.size:
            raise InvalidInput(f"masked vector has {len(raw)} bytes, expected {8 * self.size}",
                               field="data")
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


class MaskedPayload(BaseModel):
    """What one node sends for one round; the header says how to check and decode it."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = WIRE_VERSION
    session_id: str
    round: int = Field(ge=0)
    node: str
    roster: list[str] = Field(min_length=2, description="sorted names whose masks are inside")
    scale_bits: int = Field(ge=0, le=ring.MAX_SCALE_BITS)
    vectors: dict[str, MaskedVector]

    @property
    def parties(self) -> int:
        return len(self.roster)


@dataclass
class Aggregate:
    """The hub's unmasked ring sums (masks have cancelled) and how to decode them."""

    session_id: str
    round: int
    scale_bits: int
    roster: list[str]
    sums: dict[str, tuple[tuple[int, ...], ring.Ring]]
    compact: dict[str, tuple[tuple[int, ...], ring.Ring64, int]] = field(default_factory=dict)


def mask(vectors: Mapping[str, ArrayLike], *, node: str, private_key: X25519PrivateKey,
         peers: Mapping[str, X25519PublicKey], session_id: str, round: int,
         scale_bits: int = ring.DEFAULT_SCALE_BITS,
         compact: Mapping[str, int] | None = None) -> MaskedPayload:
    """Encode and mask ``vectors`` (label -> array) as ``node`` of a verified roster ``peers``.

    Labels in ``compact`` (label -> agreed scale bits) travel in Z_2^64. Raises InvalidInput
    naming the vector if a value could overflow the sum over all parties. Never call twice
    for the same (session, round): the masks would repeat.
    """
    compact = dict(compact or {})
    names = sorted(peers)
    if node not in peers:
        raise InvalidInput(f"node {node} is not in the roster", field="roster")
    seeds = {
        peer: pair_seed(private_key, peers[peer], session_id=session_id,
                        pair=(node, peer), round=round)
        for peer in names if peer != node
    }
    out: dict[str, MaskedVector] = {}
    for label, values in vectors.items():
        arr = np.asarray(values)
        if label in compact:
            f = compact[label]
            z = ring.encode64(arr, parties=len(names), scale_bits=f, name=label)
            for peer, seed in seeds.items():
                stream = keystream64(seed, round=round, label=label, m=z.shape[0])
                z = z + stream if peer > node else z - stream  # wraps mod 2^64
            out[label] = MaskedVector(shape=list(arr.shape), ring_bits=64, scale_bits=f,
                                      data=base64.b64encode(z.astype("<u8").tobytes())
                                      .decode("ascii"))
            continue
        y = ring.encode(arr, parties=len(names), scale_bits=scale_bits, name=label)
        y = _apply_masks(y, [(keystream(seed, round=round, label=label, m=y.shape[0]), peer > node)
                             for peer, seed in seeds.items()])
        out[label] = MaskedVector(shape=list(arr.shape),
                                  data=base64.b64encode(ring.to_bytes(y)).decode("ascii"))
    return MaskedPayload(session_id=session_id, round=round, node=node, roster=names,
                         scale_bits=scale_bits, vectors=out)


def _apply_masks(y: ring.Ring, streams: list[tuple[ring.Ring, bool]]) -> ring.Ring:
    """y + Σ(+stream) − Σ(−stream) mod 2^128, limb-wise in place (no temporaries per peer)."""
    lo, hi = y[:, 0].copy(), y[:, 1].copy()
    carry = np.empty(len(lo), dtype=np.uint64)
    for stream, plus in streams:
        s_lo, s_hi = stream[:, 0], stream[:, 1]
        if plus:
            np.add(lo, s_lo, out=lo)
            np.less(lo, s_lo, out=carry, casting="unsafe")  # wrapped: carry one
            np.add(hi, s_hi, out=hi)
            np.add(hi, carry, out=hi)
        else:
            np.less(lo, s_lo, out=carry, casting="unsafe")  # will wrap: borrow one
            np.subtract(lo, s_lo, out=lo)
            np.subtract(hi, s_hi, out=hi)
            np.subtract(hi, carry, out=hi)
    return np.stack([lo, hi], axis=1)


def keystream(seed: bytes, *, round: int, label: str, m: int) -> ring.Ring:
    """m ring elements from ChaCha20(seed), nonce bound to (round, label), counter from 0."""
    nonce = hashlib.sha256(canonical_json({"round": round, "label": label})).digest()[:12]
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(4) + nonce), mode=None).encryptor()
    return ring.from_bytes(encryptor.update(bytes(16 * m)), m)


def keystream64(seed: bytes, *, round: int, label: str, m: int) -> ring.Ring64:
    """m elements of Z_2^64 from the same ChaCha20 stream (8 bytes each)."""
    nonce = hashlib.sha256(canonical_json({"round": round, "label": label})).digest()[:12]
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(4) + nonce), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * m)), dtype="<u8").astype(np.uint64)


def _layout(p: MaskedPayload) -> dict[str, tuple[tuple[int, ...], int, int | None]]:
    return {label: (tuple(v.shape), v.ring_bits, v.scale_bits) for label, v in p.vectors.items()}


def aggregate(payloads: Iterable[MaskedPayload]) -> Aggregate:
    """Add the masked payloads of one round; raise DropoutError if a roster node is missing."""
    items = list(payloads)
    if not items:
        raise InvalidInput("no masked payloads to aggregate", field="payloads")
    first = items[0]
    shapes = _layout(first)
    seen: set[str] = set()
    for p in items:
        header = (p.session_id, p.round, p.roster, p.scale_bits)
        if header != (first.session_id, first.round, first.roster, first.scale_bits):
            raise InvalidInput(f"payload from {p.node} belongs to another session, round, "
                               "roster or scale", field="payloads")
        if p.node not in first.roster or p.node in seen:
            raise InvalidInput(f"unexpected or repeated payload from {p.node}", field="payloads")
        if _layout(p) != shapes:
            raise InvalidInput(f"payload from {p.node} has other vectors, shapes or rings",
                               field="payloads")
        seen.add(p.node)
    missing = set(first.roster) - seen
    if missing:
        raise DropoutError(sorted(missing), session_id=first.session_id, round=first.round)
    sums: dict[str, tuple[tuple[int, ...], ring.Ring]] = {}
    compact: dict[str, tuple[tuple[int, ...], ring.Ring64, int]] = {}
    for label, (shape, bits, f) in shapes.items():
        if bits == 64:
            small = items[0].vectors[label].to_ring64()
            for p in items[1:]:
                small = small + p.vectors[label].to_ring64()  # wraps mod 2^64
            compact[label] = (shape, small, int(f or 0))
            continue
        total = items[0].vectors[label].to_ring()
        for p in items[1:]:
            total = ring.add(total, p.vectors[label].to_ring())
        sums[label] = (shape, total)
    return Aggregate(first.session_id, first.round, first.scale_bits, list(first.roster), sums,
                     compact)


def unmask_sum(agg: Aggregate, *, integer: Collection[str] = ()
               ) -> dict[str, NDArray[np.float64] | NDArray[np.int64]]:
    """Decode each summed vector: float64 (error ≤ n·2^-(F+1) + 1 ulp), or exact int64 for
    the labels in ``integer`` (counts)."""
    out: dict[str, NDArray[np.float64] | NDArray[np.int64]] = {}
    for label, (shape, total) in agg.sums.items():
        if label in integer:
            out[label] = ring.decode_int(total, scale_bits=agg.scale_bits,
                                         name=label).reshape(shape)
        else:
            out[label] = ring.decode(total, scale_bits=agg.scale_bits).reshape(shape)
    for label, (shape, small, f) in agg.compact.items():
        out[label] = ring.decode64(small, scale_bits=f).reshape(shape)
    return out


@dataclass
class Participant:
    """One node's side of one session: its session key, the verified roster, rounds used."""

    session_id: str
    node: str
    node_key: SigningKey
    private_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    peers: dict[str, X25519PublicKey] = field(default_factory=dict)
    rounds_masked: set[int] = field(default_factory=set)

    @property
    def announcement(self) -> Announcement:
        return announcement_for(self.private_key, self.session_id, self.node, self.node_key)

    def accept_roster(self, roster: Iterable[Announcement],
                      node_keys: Mapping[str, str | Sequence[str]]) -> None:
        """Verify the relayed roster; it must carry this node's own key unchanged."""
        peers = verify_roster(self.session_id, roster, node_keys)
        own = self.announcement.public_key
        mine = peers.get(self.node)
        if mine is None or public_hex(mine) != own:
            raise RosterError(f"the roster does not carry {self.node}'s own session key",
                              field="roster")
        self.peers = peers

    def mask(self, round: int, vectors: Mapping[str, ArrayLike], *,
             scale_bits: int = ring.DEFAULT_SCALE_BITS,
             compact: Mapping[str, int] | None = None) -> MaskedPayload:
        """Mask this round's vectors; each round can be masked once (masks must not repeat)."""
        if not self.peers:
            raise InvalidInput("accept a verified roster before masking", field="roster")
        if round in self.rounds_masked:
            raise Conflict(f"round {round} of session {self.session_id} was already masked",
                           field="round")
        self.rounds_masked.add(round)
        return mask(vectors, node=self.node, private_key=self.private_key, peers=self.peers,
                    session_id=self.session_id, round=round, scale_bits=scale_bits,
                    compact=compact)
