"""The catalog page lists the specialty-disease registries with each node's rounded size, its
last refresh and whether it is up to date — in English and in Chinese."""

from __future__ import annotations

import html
import re

from hubkit import Space
from test_console import sign_in
from test_registries import _example, _register, _report


def _section(page: str) -> str:
    start = page.index('data-testid="registries"')
    return page[start:page.index("</section>", start)]


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def test_the_catalog_shows_each_registrys_size_per_node(space: Space) -> None:
    empty = sign_in(space, space.alice).get("/console/catalog").text
    assert "No registry has been registered yet." in _section(empty)
    t2d = _register(space, _example())
    lung = _register(space, {**_example("lung_cancer_lines"), "nodes": ["node-b"]})
    assert _report(space, space.node_a, {
        "name": t2d["name"], "version": 1, "digest": t2d["digest"], "size": 1060,
        "refreshed_at": "2025-03-01T08:00:00Z"}).status_code == 200
    assert _report(space, space.node_b, {
        "name": lung["name"], "version": 1, "digest": lung["digest"], "size": "<10",
        "refreshed_at": "2025-03-01T08:30:00Z"}, {
        "name": t2d["name"], "error": "ValueError: no store"}).status_code == 200
    page = sign_in(space, space.alice).get("/console/catalog")
    assert page.status_code == 200
    section = _section(page.text)
    rows = re.findall(r'<tr data-registry="([^"]+)" data-registry-node="([^"]+)">', section)
    assert rows == [("lung_cancer_lines", "node-b"), ("t2d_complications", "node-a"),
                    ("t2d_complications", "node-b")]
    assert 'data-testid="registry-size-t2d_complications-node-a">1,060<' in section
    assert 'data-testid="registry-size-lung_cancer_lines-node-b">&lt;10<' in section
    text = _text(section)
    assert "node-a 1,060 1 Mar 2025, 08:00:00 up to date" in text
    assert "node-b – – refresh failed" in text
    assert "node-b <10 1 Mar 2025, 08:30:00 up to date" in text
    _register(space, {**_example(), "title": "renamed"})  # node-a now holds an older version
    text = _text(_section(sign_in(space, space.auditor).get("/console/catalog").text))
    assert "node-a 1,060 1 Mar 2025, 08:00:00 older version 1" in text
    zh = sign_in(space, space.alice).get("/console/catalog", params={"lang": "zh"}).text
    assert "专病数据库" in zh and "最新" in _text(_section(zh))
