"""The catalog page in process: each dataset's policy as the engine reads it (the level's
default approval mode, previews, budget, prices), its data-quality summary, whether the node
is polling, the find box, and the Chinese page."""

from __future__ import annotations

import html
import re

from hubkit import Space
from test_console import sign_in

from healthspace.hub.console.pages.catalog import ONLINE_WITHIN

QUALITY = {"checks": 12, "passed": 9, "failed": 2, "not_applicable": 1, "score": 0.8182,
           "by_category": {"conformance": {"passed": 4, "failed": 1},
                           "completeness": {"passed": 3, "failed": 0},
                           "plausibility": {"passed": 2, "failed": 1}},
           "checked_at": "2026-11-30T08:00:00+00:00",
           "failed_checks": ["plausibility.birth_after_death", "conformance.unmapped_drug"],
           "rates": {"plausibility.birth_after_death": 0.4}}
PRICED = {"level": "L3", "allowed_purposes": ["research"], "min_cell_size": 11,
          "previews": {"mode": "dp", "epsilon": 0.1, "per_hour": 5},
          "dp_budget": {"epsilon_per_consumer": 2.0, "period": "month"},
          "prices": {"per_study": 500, "per_person": 0.5, "purpose_rates": {"research": 0.5}},
          "sla": {"approval_hours": 48}}


def _card(page: str, node: str) -> str:
    start = page.index(f'<section class="card dataset" aria-labelledby="node-{node}">')
    return html.unescape(page[start:page.index("</section>", start)])


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)).strip()


def test_each_dataset_shows_its_policy_as_the_engine_reads_it(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, PRICED)
    hub.ok("PUT", "/node/catalog", space.node_a, json=hub.seal(space.node_a, "catalog", {
        "tables": {"person": 1200, "drug_exposure": 5400}, "quality": QUALITY,
        "vocabularies": {"ICD10": ["E11"], "ATC": ["A10BA02"]}}))
    client = sign_in(space, space.alice)
    page = client.get("/console/catalog")
    assert page.status_code == 200
    a = _text(_card(page.text, "node-a"))
    assert "Level L3 · version" in a
    assert "Approval mode two_level (the level's default)" in a  # L3's default, not stored
    assert "Minimum cell size 11" in a and "Secure aggregation required" in a
    assert "Feasibility previews differentially private · 5 an hour · ε 0.1" in a
    assert "Differential privacy budget ε 2 per consumer, renewed monthly" in a
    assert "per study 500.00" in a and "per person 0.50" in a and "research × 0.50" in a
    assert "Decided within 48 hours." in a
    assert "Data quality: 81.8 % · 9 of 12 checks passed, 2 failed, 1 not applicable" in a
    assert "Checked 30 Nov 2026, 08:00:00." in a
    assert "plausibility.birth_after_death (0.4 %)" in a and "vocabularies: ICD10, ATC" in a
    b = _text(_card(page.text, "node-b"))
    assert "Approval mode auto (the level's default)" in b and "Free of charge." in b
    assert "Secure aggregation on request" in b
    assert "No data-quality summary published." in b
    # The overview: one row per node, each polling (they were just seen).
    rows = re.findall(r'<tr data-node="([^"]+)">', page.text)
    assert sorted(rows) == ["node-a", "node-b", "node-payer"]
    assert 'data-testid="online-node-a">online<' in page.text


def test_a_node_not_seen_lately_is_shown_as_not_polling(space: Space) -> None:
    space.hub.clock.advance(seconds=ONLINE_WITHIN.total_seconds() + 1)
    hub = space.hub
    hub.ok("PUT", "/node/catalog", space.node_b, json=hub.seal(space.node_b, "catalog", {
        "tables": {"person": 900}}))  # node-b just published; node-a is silent
    page = sign_in(space, space.auditor).get("/console/catalog").text
    assert 'data-testid="online-node-a">not polling<' in page
    assert 'data-testid="online-node-b">online<' in page


def test_the_find_box_narrows_by_node_or_organisation(space: Space) -> None:
    client = sign_in(space, space.alice)
    page = client.get("/console/catalog", params={"q": "HOSP-B"}).text
    assert re.findall(r'<tr data-node="([^"]+)">', page) == ["node-b"]
    assert "1 of 3 nodes" in page and 'value="HOSP-B"' in page
    none = client.get("/console/catalog", params={"q": "nowhere"}).text
    assert "No node matches." in none
    assert client.get("/console/catalog", params={"q": "x" * 101}).status_code == 422


def test_the_catalog_in_chinese(space: Space) -> None:
    space.hub.publish_policy(space.node_a, PRICED)
    client = sign_in(space, space.alice)
    client.post("/console/language", data={"lang": "zh", "next": "/console/catalog"})
    page = client.get("/console/catalog").text
    a = _text(_card(page, "node-a"))
    for text in ("使用策略", "两级审批", "该级别的默认值", "每小时 5 次", "按月续期", "每项研究",
                 "价格与服务水平", "48 小时内作出审批决定。"):
        assert text in a, text
    assert "共 3 个节点，显示 3 个" in page
