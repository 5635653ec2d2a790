"""RFC 6962 Merkle trees: reference vectors, every proof of small trees, and tampered proofs."""

from __future__ import annotations

import hashlib

import pytest

from healthspace.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    tree_head,
    verify_consistency,
    verify_inclusion,
)

# Certificate Transparency reference data (RFC 6962 test vectors, as in transparency-dev/merkle).
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
CT_INCLUSION = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}
CT_CONSISTENCY = {
    (2, 8): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
LEAVES = [hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(40)]


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 written as recursively as the RFC states it (independent of the module)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(
        b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])
    ).digest()


def test_reference_roots() -> None:
    assert tree_head([]) == EMPTY_ROOT == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    for n in range(1, 9):
        assert tree_head(CT_LEAVES[:n]) == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size"), list(CT_INCLUSION))
def test_reference_inclusion(index: int, size: int) -> None:
    proof = inclusion_proof(index, CT_LEAVES[:size])
    assert [p.hex() for p in proof] == CT_INCLUSION[(index, size)]
    assert verify_inclusion(CT_LEAVES[index], index, size, proof, CT_ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second"), list(CT_CONSISTENCY))
def test_reference_consistency(first: int, second: int) -> None:
    proof = consistency_proof(first, CT_LEAVES[:second])
    assert [p.hex() for p in proof] == CT_CONSISTENCY[(first, second)]
    assert verify_consistency(
        first, second, CT_ROOTS[first - 1], CT_ROOTS[second - 1], proof)


def test_frontier_matches_reference_at_every_size() -> None:
    frontier = Frontier()
    assert frontier.root() == reference_mth([])
    for n, leaf in enumerate(LEAVES, start=1):
        frontier.append(leaf)
        assert frontier.size == n
        assert frontier.root() == reference_mth(LEAVES[:n])


def _mangled(proof: list[bytes]) -> list[list[bytes]]:
    variants = [proof[:-1], [*proof, b"\xab" * 32]]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
        variants.append(flipped)
    if len(proof) >= 2 and proof[0] != proof[1]:
        variants.append([proof[1], proof[0], *proof[2:]])
    return [v for v in variants if v != proof]


@pytest.mark.parametrize("size", range(1, 41))
def test_every_inclusion_proof(size: int) -> None:
    leaves = LEAVES[:size]
    root = reference_mth(leaves)
    for index in range(size):
        proof = inclusion_proof(index, leaves)
        assert verify_inclusion(leaves[index], index, size, proof, root)
        assert not verify_inclusion(b"forged", index, size, proof, root)
        if size > 1:
            other = (index + 1) % size
            assert not verify_inclusion(leaves[index], other, size, proof, root)
        for bad in _mangled(proof):
            assert not verify_inclusion(leaves[index], index, size, bad, root)
    with pytest.raises(ValueError):
        inclusion_proof(size, leaves)


@pytest.mark.parametrize("second", range(1, 41))
def test_every_consistency_proof(second: int) -> None:
    leaves = LEAVES[:second]
    new_root = reference_mth(leaves)
    for first in range(1, second + 1):
        old_root = reference_mth(LEAVES[:first])
        proof = consistency_proof(first, leaves)
        assert verify_consistency(first, second, old_root, new_root, proof)
        assert not verify_consistency(first, second, new_root if first < second else b"x",
                                      new_root, proof)
        if first < second:
            assert not verify_consistency(first, second, old_root, old_root, proof)
            for bad in _mangled(proof):
                assert not verify_consistency(first, second, old_root, new_root, bad)
    assert not verify_consistency(second + 1, second, new_root, new_root, [])
    with pytest.raises(ValueError):
        consistency_proof(0, leaves)
