"""Signed checkpoints: an Ed25519 signature by the ledger's owner over a Merkle tree head."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from healthspace.core.canonical import canonical_json

CHECKPOINT_DOMAIN = b"healthspace-ledger-checkpoint-v1\x00"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: entries 1..``size`` of ledger ``ledger_id`` have Merkle root ``root``."""

    ledger_id: str
    size: int
    root: str
    time: str
    key_id: str
    signature: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Checkpoint:
        return cls(
            ledger_id=str(doc["ledger_id"]),
            size=int(doc["size"]),
            root=str(doc["root"]),
            time=str(doc["time"]),
            key_id=str(doc["key_id"]),
            signature=str(doc["signature"]),
        )


def checkpoint_message(ledger_id: str, size: int, root: str, time: str, key_id: str) -> bytes:
    """CHECKPOINT_DOMAIN || canonical JSON of the five signed fields."""
    body = {"key_id": key_id, "ledger_id": ledger_id, "root": root, "size": size, "time": time}
    return CHECKPOINT_DOMAIN + canonical_json(body)


def key_id(key: SigningKey | VerifyKey) -> str:
    """The hex Ed25519 public key that names a signer."""
    verify_key = key.verify_key if isinstance(key, SigningKey) else key
    return verify_key.encode().hex()


def sign_checkpoint(
    key: SigningKey, ledger_id: str, size: int, root: str, time: str
) -> Checkpoint:
    kid = key_id(key)
    message = checkpoint_message(ledger_id, size, root, time, kid)
    signature = key.sign(message).signature.hex()
    return Checkpoint(ledger_id, size, root, time, kid, signature)


def signature_valid(cp: Checkpoint) -> bool:
    """Is ``cp.signature`` a valid signature by ``cp.key_id`` (trusted or not)?"""
    try:
        verify_key = VerifyKey(bytes.fromhex(cp.key_id))
        message = checkpoint_message(cp.ledger_id, cp.size, cp.root, cp.time, cp.key_id)
        verify_key.verify(message, bytes.fromhex(cp.signature))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_checkpoint(cp: Checkpoint, trusted_keys: Collection[str]) -> str | None:
    """None if ``cp`` is validly signed by a trusted key, else the reason it is not."""
    trusted = {k.lower() for k in trusted_keys}
    if cp.key_id.lower() not in trusted:
        return f"checkpoint at size {cp.size} signed by untrusted key {cp.key_id[:16]}…"
    if not signature_valid(cp):
        return f"checkpoint at size {cp.size} has an invalid signature"
    return None
