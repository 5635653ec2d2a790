"""The dashboard's KPI tiles in process: each tile's value is the KPI API's for this month,
its trend line carries the months before, and the change on last month is computed from
those two API values."""

from __future__ import annotations

import html
import re

from hubkit import Space
from test_console import sign_in

from healthspace.demo_data import showcase_cohort


def _tile(page: str, label: str) -> str:
    found = re.search(r'<div class="tile" data-testid="tile-\d+"><span class="label">'
                      + re.escape(label) + r"</span>(.*?)</div>", page, re.S)
    assert found, f"no tile {label}"
    return html.unescape(found.group(1))


def test_tiles_show_this_month_its_trend_and_the_change_on_last_month(space: Space) -> None:
    hub = space.hub
    hub.submit(space.alice, analysis="cohort_count", cohort=showcase_cohort(), nodes=["node-a"])
    hub.clock.advance(days=31)  # 2025-04
    for _ in range(3):
        hub.submit(space.alice, analysis="cohort_count", cohort=showcase_cohort(),
                   nodes=["node-b"])
    page = sign_in(space, space.auditor).get("/console/dashboard").text
    now = hub.ok("GET", "/kpi", space.auditor, params={"period": "2025-04"})
    before = hub.ok("GET", "/kpi", space.auditor, params={"period": "2025-03"})
    assert (now["efficiency"]["studies"], before["efficiency"]["studies"]) == (3, 1)
    studies = _tile(page, "Studies")
    assert '<span class="value">3</span>' in studies
    assert "+200.0 % vs last month" in studies
    label = re.search(r'aria-label="([^"]+)"', studies).group(1)
    assert label == ("Last 6 months: 2024-11 0; 2024-12 0; 2025-01 0; 2025-02 0; "
                     "2025-03 1; 2025-04 3")
    points = re.search(r'<polyline points="([^"]+)"', studies).group(1).split()
    assert len(points) == 6 and points[-1] == "120.0,2.0"  # the highest month at the top
    assert points[0].endswith(",26.0")  # a month with none at the bottom
    refusals = _tile(page, "Node refusals")
    assert "no change to compare" in refusals  # 0 last month: no ratio
    cost = _tile(page, "Total cost")
    assert f"{now['currency']} " in cost


def test_consumers_and_data_holders_get_no_kpi_tiles(space: Space) -> None:
    for who in (space.alice, space.admin_a):
        page = sign_in(space, who).get("/console/dashboard").text
        assert 'id="kpi-h"' not in page and "svg" not in page
