"""X25519 kernels for private set intersection: hash ids to u-coordinates, blind them in workers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from healthspace.core.errors import InvalidInput

POINT = 32
"""Bytes of an X25519 u-coordinate (RFC 7748)."""
DIGEST = 16
"""Bytes kept of a double-blinded point for matching (collision bound in docs/psi.md)."""
HASH_DOMAIN = b"healthspace/psi/v1/x25519/hash-to-u\x00"


def new_scalar() -> bytes:
    """A fresh secret scalar for one session (clamped by X25519 itself)."""
    return os.urandom(32)


def hash_to_u(ident: str) -> bytes:
    """Domain-separated SHA-512 of the UTF-8 id, cut to a 255-bit u-coordinate."""
    h = bytearray(hashlib.sha512(HASH_DOMAIN + ident.encode("utf-8")).digest()[:POINT])
    h[31] &= 0x7F  # RFC 7748 ignores bit 255; clearing it makes the encoding unique
    return bytes(h)


def _ladder(scalar: bytes, points: Sequence[bytes], keep: int) -> bytes:
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    load = X25519PublicKey.from_public_bytes
    try:
        if keep == POINT:
            return b"".join([exchange(load(p)) for p in points])
        return b"".join([exchange(load(p))[:keep] for p in points])
    except ValueError as exc:  # all-zero output: the input point has small order
        raise InvalidInput("small-order point in a PSI batch (not a hashed id)") from exc


def hash_mul(scalar: bytes, ids: Sequence[str]) -> bytes:
    """First blinding: ``[k]·H(id)`` for each id, concatenated 32-byte u-coordinates."""
    return _ladder(scalar, [hash_to_u(i) for i in ids], POINT)


def point_mul(scalar: bytes, blob: bytes, keep: int = POINT) -> bytes:
    """Second blinding of concatenated points, keeping the first ``keep`` bytes of each."""
    return _ladder(scalar, [blob[i:i + POINT] for i in range(0, len(blob), POINT)], keep)


def _hash_mul_job(scalar: bytes, ids: list[str]) -> bytes:
    return hash_mul(scalar, ids)


def _point_mul_job(scalar: bytes, blob: bytes, keep: int) -> bytes:
    return point_mul(scalar, blob, keep)


class Blinder:
    """Runs the scalar multiplications of one party on ``workers`` processes (0 = inline).

    Jobs carry bytes and lists of str only; a batch is cut into one slice per worker so a
    party's batch uses every core while the other party's frame is in transit.
    """

    def __init__(self, scalar: bytes, workers: int | None = None) -> None:
        self._scalar = scalar
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
            return job(self._scalar, data, *extra)
        cuts = [n * w // self.workers for w in range(self.workers + 1)]
        futures = [self._pool.submit(job, self._scalar, data[a * width:b * width], *extra)
                   for a, b in zip(cuts, cuts[1:], strict=False)]
        return b"".join(f.result() for f in futures)
