"""GET /metrics: Prometheus text whose numbers are the database's, for operators only."""

from __future__ import annotations

from pathlib import Path

from hubkit import Space, make_hub
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

import healthspace

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(space: Space) -> Samples:
    response = space.hub.client.get("/metrics", headers=space.hub.operator)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


def db_counts(url: str, query: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {str(k): int(v) for k, v in conn.execute(text(query)).all()}
    finally:
        engine.dispose()


def db_value(url: str, query: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def test_state_gauges_equal_the_database(history: tuple[Space, dict[str, int]]) -> None:
    space, _ids = history
    samples = scrape(space)
    url = space.hub.url
    studies = db_counts(url, "SELECT status, COUNT(*) FROM studies GROUP BY status")
    assert {"completed", "awaiting_approval", "cancelled"} <= set(studies)
    gauge = by_label(samples, "healthspace_hub_studies", "state")
    assert {k: int(v) for k, v in gauge.items() if v} == studies
    assert gauge["failed"] == 0 and gauge["running"] == 0  # every state has a series
    tasks = db_counts(url, "SELECT status, COUNT(*) FROM tasks GROUP BY status")
    assert {k: int(v) for k, v in by_label(samples, "healthspace_hub_tasks", "state").items()
            if v} == tasks
    assert samples[("healthspace_hub_ledger_entries", ())] == db_value(
        url, "SELECT COUNT(*) FROM ledger_entries") > 0
    assert samples[("healthspace_hub_ledger_checkpoints", ())] == db_value(
        url, "SELECT COUNT(*) FROM ledger_checkpoints") > 0
    assert samples[("healthspace_hub_nodes", ())] == db_value(url, "SELECT COUNT(*) FROM nodes")
    assert samples[("healthspace_hub_database_up", ())] == 1
    build = by_label(samples, "healthspace_hub_build_info", "version")
    assert build == {healthspace.__version__: 1.0}


def test_node_last_seen_follows_the_clock(history: tuple[Space, dict[str, int]]) -> None:
    space, _ids = history
    hub = space.hub
    hub.clock.advance(seconds=90)
    hub.next_task(space.node_b)  # node-b calls now; node-a and node-payer stay 90 s behind
    seen = by_label(scrape(space), "healthspace_hub_node_last_seen_seconds", "node")
    assert seen["node-b"] == 0
    assert seen["node-a"] >= 90 and seen["node-payer"] >= 90
    engine = create_engine(hub.url)
    try:
        from sqlalchemy.orm import Session

        from healthspace.hub.db.models import Node

        with Session(engine) as session:
            expected = {n.name: (hub.clock.now() - n.last_seen_at).total_seconds()
                        for n in session.query(Node) if n.last_seen_at is not None}
    finally:
        engine.dispose()
    assert seen == expected


def test_latency_is_labelled_by_route_template(history: tuple[Space, dict[str, int]]) -> None:
    space, ids = history
    hub = space.hub
    for study_id in (ids["first"], ids["second"], ids["first"]):
        hub.study(space.alice, study_id)
    assert hub.call("GET", "/studies/987654", space.alice).status_code == 404
    assert hub.client.get("/no/such/page/12345").status_code == 404
    samples = scrape(space)
    count = "healthspace_hub_request_duration_seconds_count"
    route = "/api/v1/studies/{study_id}"
    key = (count, (("method", "GET"), ("route", route), ("status", "2xx")))
    assert samples[key] == 3
    assert samples[(count, (("method", "GET"), ("route", route), ("status", "4xx")))] == 1
    assert samples[(count, (("method", "GET"), ("route", "unmatched"), ("status", "4xx")))] == 1
    routes = {dict(labels)["route"] for (name, labels) in samples if name == count}
    assert not any(ch.isdigit() for r in routes for ch in r.replace("v1", "")), routes
    buckets = {dict(labels)["le"]: v for (name, labels), v in samples.items()
               if name == "healthspace_hub_request_duration_seconds_bucket"
               and dict(labels)["route"] == route and dict(labels)["status"] == "2xx"}
    assert buckets["+Inf"] == 3


def test_only_operators_and_auditors_may_scrape(space: Space) -> None:
    client = space.hub.client
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer hs_nope"}).status_code == 401
    for who in (space.alice, space.admin_a, space.node_a):
        response = client.get("/metrics", headers=who)
        assert response.status_code == 403 and "operator" in response.json()["detail"]["message"]
    assert client.get("/metrics", headers=space.auditor).status_code == 200
    assert client.get("/metrics", headers=space.hub.operator).status_code == 200


def test_each_app_has_its_own_registry(space: Space, tmp_path: Path) -> None:
    other = make_hub(tmp_path)
    try:
        for _ in range(3):
            space.hub.ok("GET", "/me", space.alice)
        response = other.client.get("/metrics", headers=other.operator)
        assert response.status_code == 200
        assert 'route="/api/v1/me"' not in response.text
        assert "healthspace_hub_nodes 0.0" in response.text
        mine = scrape(space)
        key = ("healthspace_hub_request_duration_seconds_count",
               (("method", "GET"), ("route", "/api/v1/me"), ("status", "2xx")))
        assert mine[key] == 3
    finally:
        other.close()
