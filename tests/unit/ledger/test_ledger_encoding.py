"""Entry and checkpoint encodings: canonical JSON, injective entry hashes, signatures."""

from __future__ import annotations

import math

import pytest
from ledgerkit import FOREIGN_KEY, KEY

from healthspace.ledger.checkpoint import (
    Checkpoint,
    checkpoint_message,
    key_id,
    sign_checkpoint,
    verify_checkpoint,
)
from healthspace.ledger.entry import (
    ENTRY_DOMAIN,
    GENESIS_HASH,
    canonical_json,
    entry_hash,
    expected_hash,
    make_entry,
    payload_digest,
)


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "Zoë"}}) == (
        '{"a":{"c":"Zoë","d":[1,2]},"b":1}'.encode()
    )
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})
    with pytest.raises(ValueError):
        canonical_json({"x": math.inf})
    assert payload_digest(None) == payload_digest({})
    assert payload_digest({"a": 1, "b": 2}) == payload_digest({"b": 2, "a": 1})


def test_entry_hash_commits_to_every_field_and_is_injective() -> None:
    base = ("2026-01-01T00:00:00Z", "actor", "act", "subject", "d" * 64, GENESIS_HASH)
    h = entry_hash(1, *base)
    assert len(h) == 64
    assert entry_hash(2, *base) != h
    for i in range(len(base)):
        changed = list(base)
        changed[i] = changed[i] + "x"
        assert entry_hash(1, *changed) != h
    # moving a character across a field boundary changes the hash (length prefixes)
    assert entry_hash(1, base[0], "ab", "c", *base[3:]) != entry_hash(1, base[0], "a", "bc",
                                                                         *base[3:])
    assert ENTRY_DOMAIN.startswith(b"healthspace-ledger-entry-v1")
    e = make_entry(1, *base)
    assert e.hash == expected_hash(e) == h


def test_checkpoint_sign_and_verify() -> None:
    cp = sign_checkpoint(KEY, "hub", 10, "ab" * 32, "2026-01-01T00:00:00Z")
    assert cp.key_id == key_id(KEY) and len(cp.signature) == 128
    assert verify_checkpoint(cp, [key_id(KEY)]) is None
    assert verify_checkpoint(cp, [key_id(KEY).upper()]) is None
    assert "untrusted" in str(verify_checkpoint(cp, [key_id(FOREIGN_KEY)]))
    assert Checkpoint.from_dict(cp.to_dict()) == cp
    for field, value in (("ledger_id", "node"), ("size", 11), ("root", "cd" * 32),
                         ("time", "2026-01-01T00:00:01Z")):
        forged = Checkpoint.from_dict({**cp.to_dict(), field: value})
        assert "invalid signature" in str(verify_checkpoint(forged, [key_id(KEY)]))
    # a signature lifted onto another signer's key id does not verify
    moved = Checkpoint.from_dict({**cp.to_dict(), "key_id": key_id(FOREIGN_KEY)})
    assert verify_checkpoint(moved, [key_id(FOREIGN_KEY)]) is not None
    assert checkpoint_message("a", 1, "r", "t", "k").startswith(b"healthspace-ledger-checkpoint")
