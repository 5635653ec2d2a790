"""Hub initialisation: schema, key, operator, a token shown once and stored hashed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hubkit import START, Hub, bearer, make_hub
from nacl.encoding import HexEncoder
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import select

from healthspace.core.errors import Conflict
from healthspace.hub.bootstrap import init_hub
from healthspace.hub.db.models import HubKey, Organisation, Token, User
from healthspace.hub.db.session import make_engine, make_sessionmaker, upgrade


def test_init_returns_a_working_operator_token(hub: Hub) -> None:
    me = hub.ok("GET", "/me", hub.operator)
    assert me == {"id": 1, "name": "operator", "kind": "user", "role": "operator",
                  "org": "operator"}
    token = hub.operator["Authorization"].removeprefix("Bearer ")
    assert token.startswith("hs_") and len(token) > 40


def test_token_is_stored_only_as_its_sha256(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    token = hub.operator["Authorization"].removeprefix("Bearer ")
    hub.client.close()
    engine = make_engine(hub.url)
    with make_sessionmaker(engine)() as session:
        rows = session.scalars(select(Token)).all()
        assert [r.token_hash for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        user = session.scalar(select(User).where(User.name == "operator"))
        org = session.scalar(select(Organisation).where(Organisation.name == "operator"))
        assert user is not None and org is not None
        assert (user.role, org.kind) == ("operator", "operator")
        assert user.created_at == START  # read back as aware UTC
    engine.dispose()
    secret = token.removeprefix("hs_").encode()
    for path in tmp_path.iterdir():  # database, WAL and shared-memory files alike
        assert secret not in path.read_bytes()


def test_hub_key_is_a_usable_ed25519_pair(hub: Hub) -> None:
    engine = make_engine(hub.url)
    with make_sessionmaker(engine)() as session:
        key = session.scalars(select(HubKey)).one()
    engine.dispose()
    assert key.kind == "ed25519"
    signed = SigningKey(key.private_key.encode(), encoder=HexEncoder).sign(b"ledger entry")
    VerifyKey(key.public_key.encode(), encoder=HexEncoder).verify(signed)


def test_second_init_is_a_conflict_and_keeps_the_first_token(hub: Hub) -> None:
    with pytest.raises(Conflict):
        init_hub(hub.url)
    assert hub.ok("GET", "/me", hub.operator)["name"] == "operator"


def test_upgrade_is_idempotent(hub: Hub) -> None:
    upgrade(hub.url)
    assert hub.ok("GET", "/me", hub.operator)["role"] == "operator"


def test_healthz_is_the_only_unauthenticated_route(hub: Hub) -> None:
    response = hub.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert hub.client.get("/api/v1/me", headers=bearer("hs_nope")).status_code == 401
