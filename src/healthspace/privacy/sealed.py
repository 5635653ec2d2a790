"""Sealed messages between nodes through the hub (libsodium sealed boxes).

Some studies pass records from one node to another — the payer asks a hospital about its own
visits, the hospital answers the payer only. The hub relays these messages between rounds but
must not read them, and no other node may either. Each node derives a per-study X25519 key
pair from its own secret; round one publishes the public keys, later rounds carry JSON
documents sealed (X25519 + XSalsa20-Poly1305, anonymous sender) to one recipient's key.

Plaintexts are padded to a multiple of :data:`PAD` bytes before sealing, so a message's
length tells the relay only its size class, not the exact number of records in it. The hub
is trusted to relay keys faithfully, as for secure aggregation; it cannot open a message.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from healthspace.core.errors import InvalidInput

PAD = 4096
MAX_SEALED = 64 * 1024 * 1024  # base64 characters of one sealed message


@dataclass(frozen=True)
class BoxKey:
    """A node's per-study key pair for sealed messages."""

    private: PrivateKey

    @classmethod
    def from_secret(cls, secret: bytes) -> BoxKey:
        if len(secret) != 32:
            raise ValueError("a box key needs a 32-byte secret")
        return cls(PrivateKey(secret))

    @property
    def public_b64(self) -> str:
        return base64.b64encode(bytes(self.private.public_key)).decode("ascii")

    def open(self, sealed: Any, field: str) -> Any:
        """The JSON document sealed to this key; InvalidInput naming ``field`` if it is not
        a sealed message for this key."""
        if not isinstance(sealed, str) or len(sealed) > MAX_SEALED:
            raise InvalidInput("a sealed message must be a base64 string", field=field)
        try:
            padded = SealedBox(self.private).decrypt(base64.b64decode(sealed, validate=True))
        except (ValueError, CryptoError):
            raise InvalidInput("the sealed message does not open with this node's key",
                               field=field) from None
        try:
            return json.loads(padded.rstrip(b" ").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidInput("the sealed message is not a JSON document", field=field) \
                from None


def public_key(value: Any, field: str) -> PublicKey:
    """A node's published box key (base64 of 32 bytes)."""
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput("a box key must be 32 bytes in base64", field=field)
    return PublicKey(raw)


def seal(recipient: PublicKey, document: Any) -> str:
    """``document`` as JSON, padded to a multiple of :data:`PAD` bytes, sealed to
    ``recipient``; base64."""
    text = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
    padded = text + b" " * (-len(text) % PAD)
    return base64.b64encode(SealedBox(recipient).encrypt(padded)).decode("ascii")
