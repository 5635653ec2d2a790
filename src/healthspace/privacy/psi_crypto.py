"""PSI kernels: hash ids into a group, blind them with a secret scalar, run batches in workers.

Two groups (docs/psi.md):

- ``Group.ED25519`` (default): the prime-order subgroup of edwards25519 via libsodium (PyNaCl).
  Ids are hashed with Elligator 2 (``crypto_core_ed25519_from_uniform``, cofactor cleared);
  blinding is ``crypto_scalarmult_ed25519_noclamp`` with a scalar uniform mod ℓ. libsodium
  rejects any input that is not a canonical, non-small-order point of the prime-order subgroup
  (the ``crypto_core_ed25519_is_valid_point`` checks) and any identity output, so every received
  point is validated as part of its multiplication.
- ``Group.X25519``: the fast path over X25519 u-coordinates (OpenSSL via ``cryptography``).
  Hashed ids land on the curve or its twist, and each blinded value leaks that bit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from enum import IntEnum
from types import TracebackType

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl import exceptions as nacl_exceptions
from nacl.bindings import (
    crypto_core_ed25519_from_uniform,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_noclamp,
)

from healthspace.core.errors import InvalidInput

try:  # PyNaCl's cffi handle on libsodium: the same C calls without a per-call wrapper (~5 %)
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - other PyNaCl layouts: the public bindings below
    _lib = None

POINT = 32
"""Bytes of an encoded group element (edwards25519 point or X25519 u-coordinate)."""
DIGEST = 16
"""Bytes kept of a double-blinded point for matching (collision bound in docs/psi.md)."""
X25519_DOMAIN = b"healthspace/psi/v1/x25519/hash-to-u\x00"
ED25519_DOMAIN = b"healthspace/psi/v2/ed25519/elligator2\x00"


class Group(IntEnum):
    """The group the DH-PSI runs in; the value is the frame header's group byte."""

    ED25519 = 1  # prime-order subgroup of edwards25519 (default)
    X25519 = 2  # X25519 u-coordinates: faster, leaks a curve/twist bit per id


DEFAULT_GROUP = Group.ED25519


def as_group(group: Group | str | int) -> Group:
    """``Group`` from an enum member, its name (``"ed25519"``/``"x25519"``) or its value."""
    if isinstance(group, Group):
        return group
    try:
        return Group[group.upper()] if isinstance(group, str) else Group(group)
    except (KeyError, ValueError):
        raise InvalidInput(f"unknown PSI group {group!r} (expected ed25519 or x25519)") from None


def new_scalar(group: Group | str = DEFAULT_GROUP) -> bytes:
    """A fresh secret scalar for one session.

    edwards25519: uniform in [1, ℓ) (64 random bytes reduced mod ℓ, bias ≈ 2⁻²⁵⁹).
    X25519: 32 random bytes, clamped by X25519 itself.
    """
    if as_group(group) is Group.X25519:
        return os.urandom(32)
    while True:
        scalar = crypto_core_ed25519_scalar_reduce(os.urandom(64))
        if any(scalar):
            return scalar


def derive_scalar(seed: bytes, group: Group | str = DEFAULT_GROUP) -> bytes:
    """A secret scalar derived from a 32-byte (or longer) secret ``seed`` — the same scalar
    for the same seed, so a party can take part in a multi-round session without keeping it.
    Reduced as :func:`new_scalar` does; the seed must itself be secret and unique per session.
    """
    if len(seed) < 32:
        raise InvalidInput("a PSI scalar seed needs at least 32 bytes")
    if as_group(group) is Group.X25519:
        return hashlib.blake2b(seed, digest_size=32, person=b"hs-psi-x25519").digest()
    wide = hashlib.blake2b(seed, digest_size=64, person=b"hs-psi-ed25519").digest()
    scalar = crypto_core_ed25519_scalar_reduce(wide)
    if not any(scalar):  # probability 2^-252
        raise InvalidInput("derived PSI scalar is zero; use another seed")
    return scalar


def hash_to_u(ident: str) -> bytes:
    """X25519: domain-separated SHA-512 of the UTF-8 id, cut to a 255-bit u-coordinate."""
    h = bytearray(hashlib.sha512(X25519_DOMAIN + ident.encode("utf-8")).digest()[:POINT])
    h[31] &= 0x7F  # RFC 7748 ignores bit 255; clearing it makes the encoding unique
    return bytes(h)


def hash_to_point(ident: str) -> bytes:
    """edwards25519: Elligator 2 of 32 bytes of domain-separated SHA-512, cofactor cleared."""
    digest = hashlib.sha512(ED25519_DOMAIN + ident.encode("utf-8")).digest()[:POINT]
    return crypto_core_ed25519_from_uniform(digest)


def _bad_point(point: bytes, item: int) -> InvalidInput:
    if not crypto_core_ed25519_is_valid_point(point):
        return InvalidInput(f"item {item} is not a valid ed25519 point of the prime-order "
                            "subgroup (off-curve, non-canonical, small-order or identity)")
    return InvalidInput(f"scalar multiplication of item {item} gave the identity")


def _check_scalar(scalar: bytes) -> None:
    if not isinstance(scalar, bytes) or len(scalar) != POINT:  # the C calls read 32 bytes
        raise ValueError("an ed25519 scalar is 32 bytes")


def _keep(raw: bytes, keep: int) -> bytes:
    if keep == POINT:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, POINT)[:, :keep].tobytes()


def _ed_mul(scalar: bytes, blob: bytes, keep: int, first: int) -> bytes:
    """``[k]·P`` for each 32-byte point of ``blob``; libsodium refuses (non-zero return) any P
    that ``crypto_core_ed25519_is_valid_point`` refuses, and an identity result."""
    _check_scalar(scalar)
    if _lib is None:
        mul = crypto_scalarmult_ed25519_noclamp
        points = [blob[i:i + POINT] for i in range(0, len(blob), POINT)]
        for i, p in enumerate(points):
            try:
                points[i] = mul(scalar, p)
            except nacl_exceptions.RuntimeError:
                raise _bad_point(p, first + i) from None
        return _keep(b"".join(points), keep)
    out, src, c_mul = _ffi.new("unsigned char[]", len(blob)), _ffi.from_buffer(blob), (
        _lib.crypto_scalarmult_ed25519_noclamp)
    for i in range(0, len(blob), POINT):
        if c_mul(out + i, scalar, src + i):
            raise _bad_point(blob[i:i + POINT], first + i // POINT)
    return _keep(_ffi.buffer(out)[:], keep)


def _ed_hash_mul(scalar: bytes, ids: Sequence[str], first: int) -> bytes:
    """``[k]·H(id)`` for each id: SHA-512, Elligator 2 + cofactor, scalar multiplication."""
    _check_scalar(scalar)
    sha512 = hashlib.sha512
    if _lib is None:
        return _ed_mul(scalar, b"".join([hash_to_point(i) for i in ids]), POINT, first)
    out, point = _ffi.new("unsigned char[]", POINT * len(ids)), _ffi.new("unsigned char[]", POINT)
    c_mul, c_from_uniform = _lib.crypto_scalarmult_ed25519_noclamp, (
        _lib.crypto_core_ed25519_from_uniform)
    for i, ident in enumerate(ids):
        c_from_uniform(point, sha512(ED25519_DOMAIN + ident.encode("utf-8")).digest()[:POINT])
        if c_mul(out + POINT * i, scalar, point):  # probability ≈ 2⁻²⁵⁰ per id
            raise InvalidInput(f"id {first + i} hashes to the identity (not usable in the group)")
    return _ffi.buffer(out)[:]


def _ladder(scalar: bytes, points: Sequence[bytes], keep: int, first: int) -> bytes:
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    load = X25519PublicKey.from_public_bytes
    try:
        if keep == POINT:
            return b"".join([exchange(load(p)) for p in points])
        return b"".join([exchange(load(p))[:keep] for p in points])
    except ValueError:  # all-zero output: the input point has small order
        for i, p in enumerate(points):
            try:
                exchange(load(p))
            except ValueError:
                raise InvalidInput(f"item {first + i} is a small-order X25519 point "
                                   "(not a hashed id)") from None
        raise


def _split_points(blob: bytes) -> list[bytes]:
    return [blob[i:i + POINT] for i in range(0, len(blob), POINT)]


def hash_mul(scalar: bytes, ids: Sequence[str], group: Group | str = DEFAULT_GROUP,
             first: int = 0) -> bytes:
    """First blinding: ``[k]·H(id)`` for each id, concatenated 32-byte encodings."""
    if as_group(group) is Group.X25519:
        return _ladder(scalar, [hash_to_u(i) for i in ids], POINT, first)
    return _ed_hash_mul(scalar, ids, first)


def point_mul(scalar: bytes, blob: bytes, keep: int = POINT,
              group: Group | str = DEFAULT_GROUP, first: int = 0) -> bytes:
    """Second blinding of concatenated points, keeping the first ``keep`` bytes of each.

    Invalid points raise :class:`InvalidInput` naming the item (numbered from ``first``).
    """
    if len(blob) % POINT:
        raise InvalidInput(f"point batch of {len(blob)} bytes is not whole 32-byte points")
    if as_group(group) is Group.X25519:
        return _ladder(scalar, _split_points(blob), keep, first)
    return _ed_mul(scalar, blob, keep, first)


def _hash_mul_job(group: Group, scalar: bytes, ids: list[str], first: int) -> bytes:
    return hash_mul(scalar, ids, group, first)


def _point_mul_job(group: Group, scalar: bytes, blob: bytes, first: int, keep: int) -> bytes:
    return point_mul(scalar, blob, keep, group, first)


class Blinder:
    """Runs the scalar multiplications of one party on ``workers`` processes (0 = inline).

    Jobs carry bytes and lists of str only; a batch is cut into one slice per worker so a
    party's batch uses every core while the other party's frame is in transit.
    """

    def __init__(self, scalar: bytes, workers: int | None = None,
                 group: Group | str = DEFAULT_GROUP) -> None:
        self._scalar = scalar
        self.group = as_group(group)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self._pool: Executor | None = (
            ProcessPoolExecutor(self.workers) if self.workers > 0 else None)

    def __enter__(self) -> Blinder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def hash_mul(self, ids: list[str]) -> bytes:
        return self._split(_hash_mul_job, ids, len(ids), 1)

    def point_mul(self, blob: bytes, keep: int = POINT) -> bytes:
        return self._split(_point_mul_job, blob, len(blob) // POINT, POINT, keep)

    def _split(self, job: Callable[..., bytes], data: Sequence[object] | bytes, n: int,
               width: int, *extra: int) -> bytes:
        if self._pool is None or n < 2 * self.workers:
            return job(self.group, self._scalar, data, 0, *extra)
        cuts = [n * w // self.workers for w in range(self.workers + 1)]
        futures = [self._pool.submit(job, self.group, self._scalar,
                                     data[a * width:b * width], a, *extra)
                   for a, b in zip(cuts, cuts[1:], strict=False)]
        return b"".join(f.result() for f in futures)
