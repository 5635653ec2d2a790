"""Diffie–Hellman private set intersection as bytes-in/bytes-out message steps.

Two roles. The *receiver* (secret scalar ``a``) learns the result; the *sender* (scalar ``b``)
learns only the receiver's set size. A relay (the hub) forwards frames and sees only
pseudorandom points and their counts. The group is the prime-order subgroup of edwards25519
(``group="ed25519"``, default) or X25519 u-coordinates (``group="x25519"``, faster, leaks one
curve/twist bit per id). With ``H`` the hash of an id into the group::

    sender   --SENDER_BLINDED   [b]H(y) ----------------->  receiver keeps T = {[a][b]H(y)}
    receiver --RECEIVER_BLINDED [a]H(x) ----------------->  sender
    sender   --DOUBLE_BLINDED   [b][a]H(x) (16 bytes) --->  receiver matches against T

In ``Mode.MEMBERSHIP`` the sender answers each batch in order, so the receiver learns which of
its own ids are shared; in ``Mode.SIZE`` the sender collects every answer and returns them
sorted (a canonical order that carries nothing but the set), so the receiver learns only
``|X ∩ Y|``. Every step streams in batches; see docs/psi.md for the security argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from healthspace.core.errors import InvalidInput
from healthspace.privacy.psi_crypto import (
    DEFAULT_GROUP,
    DIGEST,
    Blinder,
    Group,
    as_group,
    new_scalar,
)
from healthspace.privacy.psi_wire import Frame, Kind, Mode, decode_frame, encode_frame

__all__ = ["DigestTable", "Group", "Mode", "PsiReceiver", "PsiResult", "PsiSender", "run_psi"]

BATCH = 100_000


def _batches(ids: Iterable[str], size: int, assume_distinct: bool) -> Iterator[list[str]]:
    source: Iterable[str] = ids if assume_distinct else dict.fromkeys(ids)
    it = iter(source)
    while batch := list(islice(it, size)):
        yield batch


class DigestTable:
    """A sorted, de-duplicated set of 16-byte digests held as two uint64 columns."""

    def __init__(self, blob: bytes) -> None:
        rows = np.frombuffer(blob, dtype="<u8").reshape(-1, 2)
        rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
        if len(rows):
            fresh = np.ones(len(rows), dtype=bool)
            fresh[1:] = np.any(rows[1:] != rows[:-1], axis=1)
            rows = rows[fresh]
        self.hi = np.ascontiguousarray(rows[:, 0])
        self.lo = np.ascontiguousarray(rows[:, 1])

    def __len__(self) -> int:
        return len(self.hi)

    def to_bytes(self) -> bytes:
        return np.column_stack((self.hi, self.lo)).astype("<u8").tobytes()

    def contains(self, blob: bytes) -> np.ndarray:
        """Boolean mask: which digests of ``blob`` are in the table."""
        q = np.frombuffer(blob, dtype="<u8").reshape(-1, 2)
        left = np.searchsorted(self.hi, q[:, 0], "left")
        right = np.searchsorted(self.hi, q[:, 0], "right")
        span = right - left
        hit = np.zeros(len(q), dtype=bool)
        one = span == 1
        hit[one] = self.lo[left[one]] == q[one, 1]
        for i in np.flatnonzero(span > 1):  # equal first halves: ~n²/2^65, essentially never
            hit[i] = bool(np.any(self.lo[left[i]:right[i]] == q[i, 1]))
        return hit


@dataclass
class PsiResult:
    """What the receiver learns: the intersection size, its shared ids (membership mode only),
    and both set sizes (which DH-PSI reveals to both sides)."""

    size: int
    receiver_count: int
    sender_count: int
    members: list[str] | None = None


@dataclass
class _Expect:
    kind: Kind
    index: int = 0
    done: bool = False

    def check(self, frame: Frame, mode: Mode, group: Group) -> None:
        if frame.group != group:
            raise InvalidInput(f"PSI frame for group {frame.group.name.lower()}, session uses "
                               f"{group.name.lower()} (both parties must choose the same group)")
        if frame.mode != mode:
            raise InvalidInput(f"PSI frame for mode {frame.mode.name}, session is {mode.name}")
        if frame.kind != self.kind:
            raise InvalidInput(f"expected a {self.kind.name} frame, got {frame.kind.name}")
        if self.done or frame.index != self.index:
            raise InvalidInput(f"PSI {frame.kind.name} frame {frame.index} out of order "
                               f"(expected {'none' if self.done else self.index})")
        self.index += 1
        self.done = frame.last


class _Party:
    def __init__(self, ids: Iterable[str], mode: Mode, *, batch_size: int, workers: int | None,
                 assume_distinct: bool, group: Group | str, scalar: bytes | None) -> None:
        if batch_size < 1:
            raise InvalidInput("batch_size must be positive")
        self.mode = Mode(mode)
        self.group = as_group(group)
        self._ids = ids
        self._batch_size = batch_size
        self._assume_distinct = assume_distinct
        self._blinder = Blinder(scalar or new_scalar(self.group), workers, self.group)

    def _own_frames(self, kind: Kind) -> Iterator[tuple[list[str], bytes]]:
        """Blind our own ids batch by batch; an empty set still sends one (last) frame."""
        batches = _batches(self._ids, self._batch_size, self._assume_distinct)
        current = next(batches, [])
        index = 0
        while True:
            following = next(batches, None)
            payload = self._blinder.hash_mul(current)
            yield current, encode_frame(self.mode, kind, index, payload, last=following is None,
                                        group=self.group)
            if following is None:
                return
            current, index = following, index + 1

    def _check(self, expect: _Expect, data: bytes) -> Frame:
        frame = decode_frame(data)
        expect.check(frame, self.mode, self.group)
        return frame

    def _blind_peer(self, frame: Frame) -> bytes:
        """``[k]·m`` for each received point ``m`` (16-byte digests); errors name the batch."""
        try:
            return self._blinder.point_mul(frame.payload, DIGEST)
        except InvalidInput as exc:
            raise InvalidInput(f"PSI {frame.kind.name} frame {frame.index}: {exc}") from exc

    def close(self) -> None:
        self._blinder.close()


class PsiSender(_Party):
    """The side that learns only the receiver's set size."""

    def __init__(self, ids: Iterable[str], mode: Mode, *, batch_size: int = BATCH,
                 workers: int | None = None, assume_distinct: bool = False,
                 group: Group | str = DEFAULT_GROUP, scalar: bytes | None = None) -> None:
        super().__init__(ids, mode, batch_size=batch_size, workers=workers,
                         assume_distinct=assume_distinct, group=group, scalar=scalar)
        self._expect = _Expect(Kind.RECEIVER_BLINDED)
        self._collected: list[bytes] = []
        self.receiver_count = 0

    @property
    def done(self) -> bool:
        """True once the last answer frame has been produced."""
        return self._expect.done

    def blinded_frames(self) -> Iterator[bytes]:
        """Step 1: ``[b]H(y)`` for the sender's ids, one frame per batch."""
        for _, frame in self._own_frames(Kind.SENDER_BLINDED):
            yield frame

    def answer(self, data: bytes) -> list[bytes]:
        """Step 3: double-blind one receiver frame; the frames to send back (maybe none yet)."""
        frame = self._check(self._expect, data)
        digests = self._blind_peer(frame)
        self.receiver_count += frame.count
        if self.mode is Mode.MEMBERSHIP:
            return [encode_frame(self.mode, Kind.DOUBLE_BLINDED, frame.index, digests,
                                 last=frame.last, group=self.group)]
        self._collected.append(digests)
        if not frame.last:
            return []
        table = DigestTable(b"".join(self._collected)).to_bytes()  # sorted: order says nothing
        self._collected = []
        step = self._batch_size * DIGEST
        chunks = [table[i:i + step] for i in range(0, len(table), step)] or [b""]
        return [encode_frame(self.mode, Kind.DOUBLE_BLINDED, i, c, last=i == len(chunks) - 1,
                             group=self.group) for i, c in enumerate(chunks)]


class PsiReceiver(_Party):
    """The side that learns the intersection size, or which of its own ids are shared."""

    def __init__(self, ids: Iterable[str], mode: Mode, *, batch_size: int = BATCH,
                 workers: int | None = None, assume_distinct: bool = False,
                 group: Group | str = DEFAULT_GROUP, scalar: bytes | None = None) -> None:
        super().__init__(ids, mode, batch_size=batch_size, workers=workers,
                         assume_distinct=assume_distinct, group=group, scalar=scalar)
        self._offers = _Expect(Kind.SENDER_BLINDED)
        self._answers = _Expect(Kind.DOUBLE_BLINDED)
        self._parts: list[bytes] = []
        self._table: DigestTable | None = None
        self._pending: dict[int, list[str]] = {}
        self.sender_count = 0
        self.receiver_count = 0
        self.size = 0
        self.members: list[str] = []

    def absorb_offer(self, data: bytes) -> None:
        """Step 2a: double-blind one sender frame into the matching table T."""
        frame = self._check(self._offers, data)
        self._parts.append(self._blind_peer(frame))
        self.sender_count += frame.count
        if frame.last:
            self._table = DigestTable(b"".join(self._parts))
            self._parts = []

    def request_frames(self) -> Iterator[bytes]:
        """Step 2b: ``[a]H(x)`` for the receiver's ids, one frame per batch."""
        for index, (batch, frame) in enumerate(self._own_frames(Kind.RECEIVER_BLINDED)):
            self.receiver_count += len(batch)
            if self.mode is Mode.MEMBERSHIP:
                self._pending[index] = batch
            yield frame

    def absorb_answer(self, data: bytes) -> None:
        """Step 4: match double-blinded digests against T."""
        frame = self._check(self._answers, data)
        if self._table is None:
            raise InvalidInput("PSI answer arrived before the sender's full blinded set")
        hit = self._table.contains(frame.payload)
        self.size += int(hit.sum())
        if self.mode is Mode.MEMBERSHIP:
            batch = self._pending.pop(frame.index, None)
            if batch is None or len(batch) != len(hit):
                raise InvalidInput(f"PSI answer {frame.index} does not match a sent batch")
            self.members.extend(i for i, h in zip(batch, hit.tolist(), strict=True) if h)

    @property
    def offers_complete(self) -> bool:
        """True once the sender's last blinded frame has been absorbed."""
        return self._offers.done

    @property
    def done(self) -> bool:
        """True once the last answer frame has been matched."""
        return self._answers.done

    def result(self) -> PsiResult:
        if not self.done:
            raise InvalidInput("PSI session is not finished")
        members = self.members if self.mode is Mode.MEMBERSHIP else None
        return PsiResult(self.size, self.receiver_count, self.sender_count, members)


@dataclass
class Transcript:
    """Every frame a relay forwarded, in order (for tests and audits of what the hub sees)."""

    frames: list[bytes] = field(default_factory=list)

    def relay(self, frame: bytes) -> bytes:
        self.frames.append(frame)
        return frame


def run_psi(receiver_ids: Iterable[str], sender_ids: Iterable[str], mode: Mode, *,
            batch_size: int = BATCH, workers: int | None = None,
            transcript: Transcript | None = None,
            group: Group | str = DEFAULT_GROUP) -> PsiResult:
    """Both parties in this process, frames passed through an in-memory relay."""
    relay = (transcript or Transcript()).relay
    receiver = PsiReceiver(receiver_ids, mode, batch_size=batch_size, workers=workers,
                           group=group)
    sender = PsiSender(sender_ids, mode, batch_size=batch_size, workers=workers, group=group)
    try:
        for frame in sender.blinded_frames():
            receiver.absorb_offer(relay(frame))
        for frame in receiver.request_frames():
            for reply in sender.answer(relay(frame)):
                receiver.absorb_answer(relay(reply))
        return receiver.result()
    finally:
        receiver.close()
        sender.close()
