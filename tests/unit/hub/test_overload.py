"""An overloaded hub says so: no free database connection is a 503, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from hubkit import Hub, copy_hub

from healthspace.hub.db import session as db_session


def test_an_exhausted_connection_pool_answers_503_and_the_hub_recovers(
        hub_template: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_session, "POOL_SIZE", 1)
    monkeypatch.setattr(db_session, "POOL_OVERFLOW", 0)
    monkeypatch.setattr(db_session, "POOL_TIMEOUT_S", 0.2)
    hub = copy_hub(hub_template, tmp_path)
    try:
        engine = hub.client.app.state.hub.engine  # type: ignore[attr-defined]
        held = engine.connect()  # every connection the pool has is in use
        response = hub.call("GET", "/orgs", hub.operator)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "2"
        assert "overloaded" in response.json()["detail"]["message"]
        assert response.json()["detail"]["field"] == "database"
        held.close()
        assert hub.call("GET", "/orgs", hub.operator).status_code == 200
    finally:
        hub.close()
