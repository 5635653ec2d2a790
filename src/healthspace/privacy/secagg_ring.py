"""Fixed-point codec into the ring Z_2^128, held as numpy ``(m, 2)`` uint64 limbs (lo, hi).

Each coordinate is a 128-bit two's-complement integer ``round(x · 2^F)``; column 0 is the low
limb and column 1 the high limb, so ``array.tobytes()`` on a little-endian ``(m, 2)`` array is
exactly the 16-byte little-endian integer per coordinate. Addition wraps modulo 2^128 with an
explicit carry between limbs, which is what lets pairwise masks cancel exactly.

Precision (see docs/secure-aggregation.md): encoding rounds each value to the nearest multiple
of 2^-F, an error ≤ 2^-(F+1); a sum over n parties is exact in the ring, so its error is
≤ n · 2^-(F+1) before the one final rounding to float64 in :func:`decode`. The sum must stay
inside ±2^126, so every value must satisfy |x| < 2^(126-F) / n (checked by :func:`encode`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from healthspace.core.errors import InvalidInput

DEFAULT_SCALE_BITS = 40
MAX_SCALE_BITS = 63
RING_BITS = 128
_HEADROOM_BITS = 126  # one bit for the sign, one for float rounding slack in the limit check
_TWO32 = float(2**32)
_TWO64 = float(2**64)

Ring = NDArray[np.uint64]  # shape (m, 2): [:, 0] low limb, [:, 1] high limb


def max_abs(parties: int, scale_bits: int = DEFAULT_SCALE_BITS) -> float:
    """The largest |value| :func:`encode` accepts when ``parties`` vectors will be summed."""
    _check_params(parties, scale_bits)
    return float(2.0 ** (_HEADROOM_BITS - scale_bits) / parties)


def error_bound(parties: int, scale_bits: int = DEFAULT_SCALE_BITS) -> float:
    """Worst-case fixed-point error of a decoded sum, before its final float64 rounding."""
    return float(parties * 2.0 ** -(scale_bits + 1))


def encode(values: ArrayLike, *, parties: int, scale_bits: int = DEFAULT_SCALE_BITS,
           name: str = "vector") -> Ring:
    """Round ``values`` (any shape; flattened) to ``round(x · 2^F)`` in Z_2^128.

    Raises InvalidInput naming ``name`` for non-finite values or values whose sum over
    ``parties`` could overflow the ring. Integer-valued input is encoded exactly.
    """
    _check_params(parties, scale_bits)
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"{name} must be numeric, not {arr.dtype}", field=name)
    if arr.dtype.kind in "iu" and arr.size and np.max(np.abs(arr.astype(np.float64))) > 2**53:
        raise InvalidInput(f"{name} has integers beyond 2^53, which float64 cannot hold exactly",
                           field=name)
    x = arr.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise InvalidInput(f"{name} contains NaN or infinite values", field=name)
    limit = max_abs(parties, scale_bits)
    if x.size and float(np.max(np.abs(x))) >= limit:
        raise InvalidInput(
            f"{name} has |value| up to {float(np.max(np.abs(x))):.6g}, beyond the secure-"
            f"aggregation limit {limit:.6g} for {parties} parties at 2^-{scale_bits} precision",
            field=name,
        )
    # Scaling by a power of two and rint are exact in float64, so y is the exact integer.
    y = np.rint(np.ldexp(x, scale_bits))
    mag = np.abs(y)
    hi = np.floor(mag / _TWO64)
    lo = mag - hi * _TWO64  # exact: the result is representable (≤ 53 significant bits)
    lo_hi = np.floor(lo / _TWO32)
    lo_lo = lo - lo_hi * _TWO32
    out = np.empty((x.size, 2), dtype=np.uint64)
    out[:, 0] = (lo_hi.astype(np.uint64) << np.uint64(32)) | lo_lo.astype(np.uint64)
    out[:, 1] = hi.astype(np.uint64)
    negative = y < 0
    out[negative] = neg(out[negative])
    return out


def decode(ring: Ring, *, scale_bits: int = DEFAULT_SCALE_BITS) -> NDArray[np.float64]:
    """The signed ring values divided by 2^F, rounded once to float64 (error < 1 ulp)."""
    negative = (ring[:, 1] >> np.uint64(63)).astype(bool)
    mag = ring.copy()
    mag[negative] = neg(mag[negative])
    lo, hi = mag[:, 0], mag[:, 1]
    # Three 43-bit chunks are each exact in float64; compensated sums give one final rounding.
    mask43 = np.uint64(2**43 - 1)
    c0 = (lo & mask43).astype(np.float64)
    c1 = ((lo >> np.uint64(43)) | ((hi & np.uint64(2**22 - 1)) << np.uint64(21))).astype(
        np.float64)
    c2 = (hi >> np.uint64(22)).astype(np.float64)
    s, e1 = _two_sum(np.ldexp(c2, 86), np.ldexp(c1, 43))
    t, e2 = _two_sum(s, c0)
    value = np.ldexp(t + (e1 + e2), -scale_bits)
    return np.where(negative, -value, value)


def decode_int(ring: Ring, *, scale_bits: int = DEFAULT_SCALE_BITS,
               name: str = "vector") -> NDArray[np.int64]:
    """Exact int64 decoding of a sum of integers (counts); refuses fractions and overflow."""
    negative = (ring[:, 1] >> np.uint64(63)).astype(bool)
    mag = ring.copy()
    mag[negative] = neg(mag[negative])
    lo, hi = mag[:, 0], mag[:, 1]
    f = np.uint64(scale_bits)
    if scale_bits and np.any(lo & np.uint64((1 << scale_bits) - 1)):
        raise InvalidInput(f"{name} is not a sum of integers", field=name)
    q_lo = (lo >> f) | (hi << np.uint64(64 - scale_bits)) if scale_bits else lo
    q_hi = hi >> f if scale_bits else hi
    if np.any(q_hi) or np.any(q_lo >= np.uint64(2**63)):
        raise InvalidInput(f"{name} does not fit in int64", field=name)
    out = q_lo.astype(np.int64)
    return np.where(negative, -out, out)


def add(a: Ring, b: Ring) -> Ring:
    """a + b mod 2^128, limb-wise with carry."""
    lo = a[:, 0] + b[:, 0]
    carry = (lo < a[:, 0]).astype(np.uint64)
    return np.stack([lo, a[:, 1] + b[:, 1] + carry], axis=1)


def neg(a: Ring) -> Ring:
    """-a mod 2^128 (two's complement: invert, then add one with carry)."""
    lo = ~a[:, 0] + np.uint64(1)
    carry = (lo == 0).astype(np.uint64)
    return np.stack([lo, ~a[:, 1] + carry], axis=1)


def sub(a: Ring, b: Ring) -> Ring:
    """a - b mod 2^128."""
    return add(a, neg(b))


def zeros(m: int) -> Ring:
    return np.zeros((m, 2), dtype=np.uint64)


def to_bytes(ring: Ring) -> bytes:
    """16 little-endian bytes per coordinate."""
    return np.ascontiguousarray(ring, dtype="<u8").tobytes()


def from_bytes(raw: bytes, m: int) -> Ring:
    if len(raw) != 16 * m:
        raise InvalidInput(f"masked vector has {len(raw)} bytes, expected {16 * m}")
    return np.frombuffer(raw, dtype="<u8").reshape(m, 2).astype(np.uint64)


def _two_sum(a: NDArray[np.float64], b: NDArray[np.float64]
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Knuth's error-free transformation: a + b == s + e exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _check_params(parties: int, scale_bits: int) -> None:
    if parties < 1:
        raise InvalidInput("secure aggregation needs at least one party", field="parties")
    if not 0 <= scale_bits <= MAX_SCALE_BITS:
        raise InvalidInput(f"scale_bits must be in 0..{MAX_SCALE_BITS}", field="scale_bits")


# --- the compact ring Z_2^64, for labels whose magnitude bound is agreed before masking -----
#
# When the coordinator knows a public bound B on every party's |value| for a label (for
# example from the previous round's network sums), the label can travel in Z_2^64 with a
# scale chosen for B: 8 bytes per value instead of 16. ``compact_scale`` picks the largest F
# with parties · B · 2^F < 2^62, so the sum cannot wrap; its error is ≤ parties · 2^-(F+1),
# i.e. about parties² · B · 2^-63 — below float64's own rounding of a sum of that size.

Ring64 = NDArray[np.uint64]


def compact_scale(bound: float, parties: int) -> int:
    """The fractional bits for values bounded by ``bound`` summed over ``parties``."""
    if not (bound > 0 and np.isfinite(bound)) or parties < 1:
        raise InvalidInput("a compact scale needs a positive finite bound", field="bound")
    bits = int(np.floor(62 - np.log2(parties * bound))) - 1
    return max(min(bits, MAX_SCALE_BITS), -MAX_SCALE_BITS)


def encode64(values: ArrayLike, *, parties: int, scale_bits: int,
             name: str = "vector") -> Ring64:
    """``round(x · 2^F)`` in Z_2^64 (two's complement); refuses values that could wrap."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise InvalidInput(f"{name} contains NaN or infinite values", field=name)
    limit = float(2.0 ** (62 - scale_bits) / max(parties, 1))
    if x.size and float(np.max(np.abs(x))) >= limit:
        raise InvalidInput(
            f"{name} has |value| up to {float(np.max(np.abs(x))):.6g}, beyond the agreed "
            f"compact-ring bound {limit:.6g} for {parties} parties", field=name)
    return np.rint(np.ldexp(x, scale_bits)).astype(np.int64).view(np.uint64)


def decode64(ring: Ring64, *, scale_bits: int) -> NDArray[np.float64]:
    """The signed Z_2^64 values divided by 2^F (one rounding to float64)."""
    return np.ldexp(ring.view(np.int64).astype(np.float64), -scale_bits)
