"""Node enrolment (idempotent, token rotation), catalogue publication and browsing."""

from __future__ import annotations

from hubkit import START, Space, bearer


def test_enrolment_is_idempotent_and_rotates_the_token(space: Space) -> None:
    hub = space.hub
    first = hub.ok("POST", "/nodes", hub.operator, 201, json={"name": "node-c", "org": "hosp-a"})
    assert first["created"] is True
    again = hub.ok("POST", "/nodes", hub.operator, 200, json={"name": "node-c", "org": "hosp-a"})
    assert (again["id"], again["created"], again["org"]) == (first["id"], False, "hosp-a")
    assert again["token"] != first["token"]
    assert hub.call("GET", "/me", bearer(first["token"])).status_code == 401
    assert hub.ok("GET", "/me", bearer(again["token"]))["name"] == "node-c"
    names = [n["name"] for n in hub.ok("GET", "/nodes", hub.operator)]
    assert names.count("node-c") == 1


def test_same_node_name_in_another_org_is_a_conflict(space: Space) -> None:
    hub = space.hub
    response = hub.call("POST", "/nodes", hub.operator, json={"name": "node-a", "org": "hosp-b"})
    assert response.status_code == 409
    assert response.json()["detail"]["field"] == "name"
    assert hub.ok("GET", "/me", space.node_a)["name"] == "node-a"  # untouched


def test_data_holder_admin_enrols_only_for_its_own_org(space: Space) -> None:
    hub = space.hub
    own = hub.ok("POST", "/nodes", space.admin_a, 201, json={"name": "node-a2", "org": "hosp-a"})
    assert own["org"] == "hosp-a"
    other = hub.call("POST", "/nodes", space.admin_a, json={"name": "sneaky", "org": "hosp-b"})
    assert other.status_code == 403
    # re-enrolling its own node is how an admin recovers a lost node token
    again = hub.ok("POST", "/nodes", space.admin_a, 200, json={"name": "node-a", "org": "hosp-a"})
    assert again["id"] == hub.nodes["node-a"]
    assert hub.call("GET", "/me", space.node_a).status_code == 401


def test_catalog_publication_updates_last_seen(space: Space) -> None:
    hub = space.hub
    hub.clock.advance(hours=2)
    key = hub.keys["node-b"].verify_key.encode().hex()
    catalog = {
        "tables": {"person": 2300, "condition_occurrence": 51000},
        "vocabularies": {"ICD10": ["K92.2"]},
        "public_key": key,
        "software_version": "0.1.0",
    }
    view = hub.ok("PUT", "/node/catalog", space.node_b, json=hub.seal(space.node_b, "catalog",
                                                                      catalog))
    assert view["public_key"] == key
    assert view["catalog"]["tables"]["person"] == 2300
    assert view["last_seen_at"] == "2025-03-01T11:00:00Z"
    assert view["enrolled_at"] == START.isoformat().replace("+00:00", "Z")


def test_catalog_may_not_name_another_key(space: Space) -> None:
    envelope = space.hub.seal(space.node_b, "catalog", {"public_key": "cd" * 32})
    response = space.hub.call("PUT", "/node/catalog", space.node_b, json=envelope)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "payload.public_key"


def test_consumers_browse_the_catalogue(space: Space) -> None:
    nodes = space.hub.ok("GET", "/nodes", space.alice)
    by_name = {n["name"]: n for n in nodes}
    assert set(by_name) == {"node-a", "node-b", "node-payer"}
    assert by_name["node-payer"]["org_kind"] == "payer"
    assert by_name["node-a"]["catalog"]["tables"] == {"person": 1000}
    assert by_name["node-a"]["public_key"] == space.hub.keys["node-a"].verify_key.encode().hex()
    page = space.hub.ok("GET", "/nodes?limit=1&offset=1", space.alice)
    assert [n["name"] for n in page] == ["node-b"]


def test_catalog_is_validated(space: Space) -> None:
    envelope = space.hub.seal(space.node_a, "catalog", {"tables": {"x": "many"}})
    response = space.hub.call("PUT", "/node/catalog", space.node_a, json=envelope)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "payload.tables.x"
    unsigned = {"tables": {"person": 10}}  # a bare catalogue is no longer accepted
    response = space.hub.call("PUT", "/node/catalog", space.node_a, json=unsigned)
    assert response.status_code == 422 and response.json()["detail"]["field"].startswith("body")


def test_polling_records_last_seen(space: Space) -> None:
    hub = space.hub
    hub.clock.advance(minutes=7)
    assert hub.next_task(space.node_a) is None
    by_name = {n["name"]: n for n in hub.ok("GET", "/nodes", space.alice)}
    assert by_name["node-a"]["last_seen_at"] == "2025-03-01T09:07:00Z"
    assert by_name["node-b"]["last_seen_at"] == "2025-03-01T09:00:00Z"


def test_last_seen_is_written_at_most_every_five_seconds(space: Space) -> None:
    """A node polling in a tight loop costs no write per poll: its stamp is at most 5 s old."""
    hub = space.hub

    def last_seen() -> str:
        return {n["name"]: n for n in hub.ok("GET", "/nodes", space.alice)}["node-a"][
            "last_seen_at"]

    hub.clock.advance(minutes=7)
    assert hub.next_task(space.node_a) is None
    assert last_seen() == "2025-03-01T09:07:00Z"
    hub.clock.advance(seconds=3)
    assert hub.next_task(space.node_a) is None
    assert last_seen() == "2025-03-01T09:07:00Z"  # within the interval: not rewritten
    hub.clock.advance(seconds=2)
    assert hub.next_task(space.node_a) is None
    assert last_seen() == "2025-03-01T09:07:05Z"
