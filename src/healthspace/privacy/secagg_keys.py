"""Secure-aggregation key agreement: signed X25519 session keys and pairwise HKDF seeds.

Every node makes a fresh X25519 key pair per session and signs its public key, together with
the session id and its own name, with its enrolled Ed25519 node key. The hub only relays these
announcements; each node checks the whole roster against the node keys the hub registered
(:func:`verify_roster`) before deriving any mask, so a hub that swaps in its own key is caught.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field

from healthspace.core.canonical import canonical_json
from healthspace.core.envelope import EnvelopeError

ROSTER_DOMAIN = b"healthspace-secagg-roster-v1\n"
SEED_DOMAIN = b"healthspace-secagg-seed-v1"
MIN_PARTIES = 2


class RosterError(EnvelopeError):
    """An announcement is unsigned, signed by the wrong key, duplicated or unknown."""


class Announcement(BaseModel):
    """One node's signed X25519 public key for one session; relayed verbatim by the hub."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(min_length=1, max_length=200)
    node: str = Field(min_length=1, max_length=200)
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="X25519, raw, hex")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="Ed25519 by the node key")

    def signed_bytes(self) -> bytes:
        body = {"session_id": self.session_id, "node": self.node, "public_key": self.public_key}
        return ROSTER_DOMAIN + canonical_json(body)


def announce(session_id: str, node: str, node_key: SigningKey
             ) -> tuple[X25519PrivateKey, Announcement]:
    """A fresh session key pair and its announcement signed with the node's Ed25519 key."""
    private = X25519PrivateKey.generate()
    return private, announcement_for(private, session_id, node, node_key)


def announcement_for(private: X25519PrivateKey, session_id: str, node: str,
                     node_key: SigningKey) -> Announcement:
    """Sign an existing session key (tests pin keys this way)."""
    public = public_hex(private.public_key())
    unsigned = Announcement(session_id=session_id, node=node, public_key=public,
                            signature="0" * 128)
    signature = node_key.sign(unsigned.signed_bytes()).signature.hex()
    return unsigned.model_copy(update={"signature": signature})


def verify_roster(session_id: str, roster: Iterable[Announcement],
                  node_keys: Mapping[str, str | Sequence[str]]) -> dict[str, X25519PublicKey]:
    """Check every announcement; return node name -> X25519 public key, sorted by name.

    ``node_keys`` maps each node name to its registered Ed25519 public key(s), hex. Raises
    RosterError on a foreign session, unknown node, bad signature, repeated node or key, or a
    roster smaller than MIN_PARTIES.
    """
    peers: dict[str, X25519PublicKey] = {}
    seen_keys: set[str] = set()
    for item in roster:
        if item.session_id != session_id:
            raise RosterError(f"announcement from {item.node} is for session {item.session_id}",
                              field="roster")
        if item.node in peers:
            raise RosterError(f"node {item.node} appears twice in the roster", field="roster")
        if item.public_key in seen_keys:
            raise RosterError(f"node {item.node} reuses another node's session key",
                              field="roster")
        registered = node_keys.get(item.node)
        if registered is None:
            raise RosterError(f"node {item.node} is not registered", field="roster")
        if not _signed_by_any(item, [registered] if isinstance(registered, str) else registered):
            raise RosterError(f"bad roster signature for node {item.node}", field="roster")
        peers[item.node] = X25519PublicKey.from_public_bytes(bytes.fromhex(item.public_key))
        seen_keys.add(item.public_key)
    if len(peers) < MIN_PARTIES:
        raise RosterError(f"secure aggregation needs at least {MIN_PARTIES} nodes",
                          field="roster")
    return dict(sorted(peers.items()))


def pair_seed(private: X25519PrivateKey, peer: X25519PublicKey, *, session_id: str,
              pair: tuple[str, str], round: int) -> bytes:
    """The 32-byte seed both nodes of ``pair`` derive for ``round`` (HKDF-SHA256)."""
    shared = private.exchange(peer)  # cryptography rejects small-order (all-zero) results
    info = SEED_DOMAIN + canonical_json(
        {"session_id": session_id, "pair": sorted(pair), "round": round})
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _signed_by_any(item: Announcement, keys: Sequence[str]) -> bool:
    for key_hex in keys:
        try:
            VerifyKey(bytes.fromhex(key_hex)).verify(item.signed_bytes(),
                                                     bytes.fromhex(item.signature))
            return True
        except (BadSignatureError, ValueError):
            continue
    return False


def public_hex(public: X25519PublicKey) -> str:
    """The raw 32-byte X25519 public key, hex."""
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


# --- one-time prekeys ---------------------------------------------------------------------
#
# So that a round needs no extra round trip for key agreement, each node uploads a small
# stock of one-time X25519 keys ahead of time, each signed with its Ed25519 node key (the
# "prekeys" of the Signal protocol). The hub assigns one unused prekey per node to each new
# session and relays the roster inside the hub-signed task. A node binds a prekey to the first
# session it is used in and refuses it for any other, and deletes the secret once the session
# is over, so a later compromise of the node does not expose old masks.

PREKEY_DOMAIN = b"healthspace-secagg-prekey-v1\n"


class Prekey(BaseModel):
    """One node's signed one-time X25519 public key, relayed verbatim by the hub."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    node: str = Field(min_length=1, max_length=200)
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="X25519, raw, hex")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="Ed25519 by the node key")

    def signed_bytes(self) -> bytes:
        body = {"key_id": self.key_id, "node": self.node, "public_key": self.public_key}
        return PREKEY_DOMAIN + canonical_json(body)


def make_prekey(node: str, node_key: SigningKey) -> tuple[X25519PrivateKey, Prekey]:
    """A fresh one-time key pair and its signed public half."""
    import secrets

    private = X25519PrivateKey.generate()
    unsigned = Prekey(key_id=secrets.token_hex(16), node=node,
                      public_key=public_hex(private.public_key()), signature="0" * 128)
    signature = node_key.sign(unsigned.signed_bytes()).signature.hex()
    return private, unsigned.model_copy(update={"signature": signature})


def prekey_signed_by(item: Prekey, node_key_hex: str) -> bool:
    try:
        VerifyKey(bytes.fromhex(node_key_hex)).verify(item.signed_bytes(),
                                                      bytes.fromhex(item.signature))
        return True
    except (BadSignatureError, ValueError):
        return False


def verify_prekey_roster(roster: Iterable[tuple[Prekey, str]]) -> dict[str, X25519PublicKey]:
    """Check ``(prekey, node key hex)`` pairs; return node name -> X25519 key, sorted by name.

    Raises RosterError on a bad signature, a repeated node, key id or key, or fewer than
    MIN_PARTIES entries. Whether each node key is the right one for its node is the caller's
    check (the node pins its peers' keys on first use).
    """
    peers: dict[str, X25519PublicKey] = {}
    seen: set[str] = set()
    for item, node_key in roster:
        if item.node in peers:
            raise RosterError(f"node {item.node} appears twice in the roster", field="roster")
        if item.key_id in seen or item.public_key in seen:
            raise RosterError(f"node {item.node} reuses a key of the roster", field="roster")
        if not prekey_signed_by(item, node_key):
            raise RosterError(f"bad prekey signature for node {item.node}", field="roster")
        peers[item.node] = X25519PublicKey.from_public_bytes(bytes.fromhex(item.public_key))
        seen.update((item.key_id, item.public_key))
    if len(peers) < MIN_PARTIES:
        raise RosterError(f"secure aggregation needs at least {MIN_PARTIES} nodes",
                          field="roster")
    return dict(sorted(peers.items()))
