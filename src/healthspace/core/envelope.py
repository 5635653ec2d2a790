"""Signed node messages: every node→hub message travels in an Ed25519-signed envelope.

The envelope binds the payload (by its digest) to the sending node, the study and round it
belongs to, a fresh nonce and a timestamp. The hub verifies the signature against the node's
enrolled key, rejects replays (a nonce seen before, or a timestamp outside the window) and
stores the envelope, so every result can be traced to the node that produced it. The hub signs
what it hands to nodes (task assignments) with its own key, which nodes pin.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field

from healthspace.core.canonical import canonical_json, digest
from healthspace.core.clock import Clock, SystemClock, iso
from healthspace.core.errors import HealthspaceError

ENVELOPE_DOMAIN = b"healthspace-envelope-v1\n"
ASSIGNMENT_DOMAIN = b"healthspace-assignment-v1\n"
KEY_ROTATION_DOMAIN = b"healthspace-key-rotation-v1\n"
# An envelope is fresh within ±REPLAY_WINDOW of the receiver's clock: node clocks may be off
# by that much (docs/operations.md, "Failures and recovery"); beyond it the envelope is refused.
REPLAY_WINDOW = timedelta(minutes=5)


class EnvelopeError(HealthspaceError):
    """A signature, digest, key or freshness check failed."""

    status_code = 401


class ReplayError(EnvelopeError):
    status_code = 409


MAX_ROW_ID = 2**31 - 1


class Envelope(BaseModel):
    """The spec's envelope fields plus kind, signer key id and Ed25519 signature."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=40, description="task.result, catalog, policy, …")
    # within the hub's row ids (32-bit on PostgreSQL): a larger number names no study or node
    study_id: int | None = Field(None, ge=1, le=MAX_ROW_ID)
    node_id: int = Field(ge=1, le=MAX_ROW_ID)
    round: int | None = Field(None, ge=0, le=MAX_ROW_ID)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    timestamp: datetime
    payload_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    payload: dict[str, Any]
    meter: dict[str, Any] | None = None
    key_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="signer's Ed25519 public key")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def signed_fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "study_id": self.study_id,
            "node_id": self.node_id,
            "round": self.round,
            "nonce": self.nonce,
            "timestamp": iso(self.timestamp),
            "payload_digest": self.payload_digest,
            "meter": self.meter,
            "key_id": self.key_id,
        }


def seal(
    kind: str,
    payload: dict[str, Any],
    key: SigningKey,
    *,
    node_id: int,
    study_id: int | None = None,
    round: int | None = None,
    meter: dict[str, Any] | None = None,
    clock: Clock | None = None,
) -> Envelope:
    """Wrap and sign ``payload`` as the node holding ``key``."""
    now = (clock or SystemClock()).now()
    fields: dict[str, Any] = {
        "kind": kind,
        "study_id": study_id,
        "node_id": node_id,
        "round": round,
        "nonce": secrets.token_hex(16),
        "timestamp": iso(now),
        "payload_digest": digest(payload),
        "meter": meter,
        "key_id": key.verify_key.encode().hex(),
    }
    signature = key.sign(ENVELOPE_DOMAIN + canonical_json(fields)).signature.hex()
    return Envelope(**fields, payload=payload, signature=signature)


def verify_envelope(
    envelope: Envelope,
    trusted_keys: set[str] | list[str],
    *,
    now: datetime,
    window: timedelta = REPLAY_WINDOW,
) -> None:
    """Raise EnvelopeError unless the envelope is intact, fresh and signed by a trusted key.

    Nonce bookkeeping (the replay store) belongs to the receiver; see ``check_fresh``.
    """
    if envelope.key_id not in set(trusted_keys):
        raise EnvelopeError("envelope signed with a key not enrolled for this node",
                            field="key_id")
    if digest(envelope.payload) != envelope.payload_digest:
        raise EnvelopeError("payload does not match payload_digest", field="payload_digest")
    try:
        VerifyKey(bytes.fromhex(envelope.key_id)).verify(
            ENVELOPE_DOMAIN + canonical_json(envelope.signed_fields()),
            bytes.fromhex(envelope.signature),
        )
    except (BadSignatureError, ValueError) as exc:
        raise EnvelopeError("bad envelope signature", field="signature") from exc
    check_fresh(envelope.timestamp, now=now, window=window)


def check_fresh(timestamp: datetime, *, now: datetime, window: timedelta = REPLAY_WINDOW) -> None:
    """Refuse an envelope sealed more than ``window`` before or after ``now``.

    Inside the window a node's clock may be off (skew is tolerated); outside it the message
    says by how much and which way, because the usual cause is a node clock that drifted.
    """
    skew = timestamp - now
    if abs(skew) > window:
        way = "ahead of" if skew > timedelta(0) else "behind"
        raise ReplayError(
            f"envelope timestamp {iso(timestamp)} is {_span(abs(skew))} {way} the receiver's "
            f"clock ({iso(now)}); at most {_span(window)} of clock skew is accepted: check "
            "the sender's clock (NTP) and re-seal the message",
            field="timestamp",
        )


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    minutes, seconds = divmod(seconds, 60)
    if not minutes:
        return f"{seconds} s"
    return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"


# --- hub-signed assignments ---------------------------------------------------------------


def sign_assignment(assignment: dict[str, Any], key: SigningKey) -> str:
    """The hub's signature over a task assignment (every field except ``hub_signature``)."""
    body = {k: v for k, v in assignment.items() if k != "hub_signature"}
    return key.sign(ASSIGNMENT_DOMAIN + canonical_json(body)).signature.hex()


def verify_assignment(assignment: dict[str, Any], hub_keys: set[str] | list[str]) -> None:
    """Raise EnvelopeError unless a pinned hub key signed this assignment."""
    signature = assignment.get("hub_signature")
    if not signature:
        raise EnvelopeError("task assignment is not signed by the hub", field="hub_signature")
    body = {k: v for k, v in assignment.items() if k != "hub_signature"}
    for key_hex in hub_keys:
        try:
            VerifyKey(bytes.fromhex(key_hex)).verify(
                ASSIGNMENT_DOMAIN + canonical_json(body), bytes.fromhex(str(signature))
            )
            return
        except (BadSignatureError, ValueError):
            continue
    raise EnvelopeError("task assignment signature does not match a pinned hub key",
                        field="hub_signature")


# --- key rotation -----------------------------------------------------------------------


def rotation_statement(old: SigningKey, new: SigningKey, *, at: datetime) -> dict[str, str]:
    """``old`` vouches for ``new``; ``new`` proves possession. Both signatures are hex."""
    body = {"old_key": old.verify_key.encode().hex(), "new_key": new.verify_key.encode().hex(),
            "at": iso(at)}
    message = KEY_ROTATION_DOMAIN + canonical_json(body)
    return {**body, "old_signature": old.sign(message).signature.hex(),
            "new_signature": new.sign(message).signature.hex()}


def verify_rotation(statement: dict[str, str]) -> str:
    """Check both signatures of a rotation statement; return the new key (hex)."""
    try:
        body = {k: statement[k] for k in ("old_key", "new_key", "at")}
        message = KEY_ROTATION_DOMAIN + canonical_json(body)
        VerifyKey(bytes.fromhex(body["old_key"])).verify(
            message, bytes.fromhex(statement["old_signature"]))
        VerifyKey(bytes.fromhex(body["new_key"])).verify(
            message, bytes.fromhex(statement["new_signature"]))
    except (KeyError, BadSignatureError, ValueError) as exc:
        raise EnvelopeError("invalid key-rotation statement", field="rotation") from exc
    return body["new_key"]
