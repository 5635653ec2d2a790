"""PSI framing: a 20-byte header (version, group, mode, kind, batch) before packed points."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from healthspace.core.errors import InvalidInput
from healthspace.privacy.psi_crypto import DEFAULT_GROUP, DIGEST, POINT, Group

MAGIC = b"HSPI"
VERSION = 2  # 1: 16-byte header without a group byte (X25519 only)
# magic, version, group, mode, kind, flags, 3 reserved zero bytes, batch index, item count
_HEADER = struct.Struct(">4sBBBBB3sII")
HEADER_SIZE = _HEADER.size
LAST = 0x01
_RESERVED = bytes(3)


class Mode(IntEnum):
    """What the receiver learns: only the intersection size, or which of its ids match."""

    SIZE = 1
    MEMBERSHIP = 2


class Kind(IntEnum):
    """The three messages of the protocol, in the order they flow."""

    SENDER_BLINDED = 1  # sender → receiver: [b]H(y), 32-byte points
    RECEIVER_BLINDED = 2  # receiver → sender: [a]H(x), 32-byte points
    DOUBLE_BLINDED = 3  # sender → receiver: first 16 bytes of [b][a]H(x)


WIDTH = {Kind.SENDER_BLINDED: POINT, Kind.RECEIVER_BLINDED: POINT, Kind.DOUBLE_BLINDED: DIGEST}


@dataclass(frozen=True)
class Frame:
    """One decoded message: which step, which batch, whether it is the last, its payload."""

    group: Group
    mode: Mode
    kind: Kind
    index: int
    last: bool
    payload: bytes

    @property
    def count(self) -> int:
        return len(self.payload) // WIDTH[self.kind]


def encode_frame(mode: Mode, kind: Kind, index: int, payload: bytes, *, last: bool,
                 group: Group = DEFAULT_GROUP) -> bytes:
    """Header + payload; the payload must hold whole items of the kind's width."""
    count, rest = divmod(len(payload), WIDTH[kind])
    if rest:
        raise ValueError("payload is not a whole number of items")
    return _HEADER.pack(MAGIC, VERSION, group, mode, kind, LAST if last else 0, _RESERVED, index,
                        count) + payload


def decode_frame(data: bytes) -> Frame:
    """Parse and check a frame; any inconsistency raises :class:`InvalidInput`."""
    if len(data) < HEADER_SIZE:
        raise InvalidInput(f"PSI frame of {len(data)} bytes is shorter than its header")
    magic, version, group, mode, kind, flags, reserved, index, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidInput("not a PSI frame (bad magic)")
    if version != VERSION:
        raise InvalidInput(f"unsupported PSI frame version {version} (expected {VERSION})")
    try:
        group_ = Group(group)
    except ValueError as exc:
        raise InvalidInput(f"unknown PSI group {group} (1 = ed25519, 2 = x25519)") from exc
    try:
        mode_, kind_ = Mode(mode), Kind(kind)
    except ValueError as exc:
        raise InvalidInput(f"unknown PSI mode {mode} or message kind {kind}") from exc
    if flags & ~LAST or reserved != _RESERVED:
        raise InvalidInput(f"unknown PSI frame flags {flags:#x} or non-zero reserved bytes")
    payload = data[HEADER_SIZE:]
    if len(payload) != count * WIDTH[kind_]:
        raise InvalidInput(f"PSI frame {index} announces {count} items but carries "
                           f"{len(payload)} bytes (truncated or padded)")
    return Frame(group_, mode_, kind_, index, bool(flags & LAST), payload)
