"""Result charts in a real browser (Debian's Chromium through Playwright) over the shared live
federation: a Kaplan–Meier and a Cox study submitted by the consumer through the SDK on the
rossi registry nodes; on the study page the charts load under the CSP with their alt texts,
the tables equal the API's result, the CSV / JSON / PNG downloads work with the session and
are on the audit ledger, and after switching to Chinese the chart is drawn in Chinese.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
from playwright.sync_api import Page, Response, expect

from healthspace.client.sdk import API, HubClient
from healthspace.core.enums import StudyStatus
from healthspace.core.models import StudyView
from healthspace.hub.console.i18n import Translator
from healthspace.ledger.entry import payload_digest

from ..conftest import ROSSI_NODES
from .helpers import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]

SPECS = {
    "km": {"title": "Browser KM", "analysis": "km", "purpose": "research", "nodes": ROSSI_NODES,
           "params": {"duration": "week", "event": "arrest", "group": "fin"}},
    "cox": {"title": "Browser Cox", "analysis": "cox", "purpose": "research",
            "nodes": ROSSI_NODES, "params": {"duration": "week", "event": "arrest",
                                             "covariates": ["fin", "age", "prio"]}},
}
KM_ALT = "Kaplan–Meier survival curves with 95 % confidence bands."
COX_ALT = "Forest plot of the hazard ratios with 95 % confidence intervals."
ZH_KM_TITLE = "Kaplan–Meier 生存曲线（各站点合并）"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def studies(live) -> dict[str, StudyView]:
    """Both studies, submitted together by the consumer and run to completion."""
    with live.consumer() as consumer:
        submitted = {name: consumer.submit(spec).id for name, spec in SPECS.items()}
        done = {name: consumer.wait(study_id, timeout=240)
                for name, study_id in submitted.items()}
    for name, view in done.items():
        assert view.status == StudyStatus.COMPLETED, (name, view.error)
    return done


def en(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def open_study(console, page: Page, study_id: int, chart: str, fmt: str = "svg") -> Response:
    """Go to the study page; the response of its ``chart`` image as the browser loaded it."""
    with page.expect_response(lambda r: f"/chart/{chart}.{fmt}" in r.url) as loaded:
        console.goto(page, f"/console/studies/{study_id}")
    expect(page.get_by_test_id("study-status")).to_have_text(re.compile("completed|已完成"))
    return loaded.value


def check_chart(page: Page, name: str, alt: str, response: Response, lang: str) -> str:
    """The chart ``name`` shown: loaded (natural size), with its alt text, served as an image
    under the console's CSP in the page's language; its URL."""
    img = page.get_by_test_id(f"chart-{name}").locator("img")
    expect(img).to_have_attribute("alt", alt)
    expect(img).to_have_js_property("complete", True)
    width, height = img.evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
    assert width > 300 and height > 150
    assert response.status == 200
    headers = response.headers
    assert headers["content-type"] in ("image/svg+xml", "image/png")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-language"] == ("zh-Hans" if lang == "zh" else "en")
    src = img.get_attribute("src")
    assert src is not None and src.endswith(f"?lang={lang}")
    assert response.url.endswith(src)
    return src


def rows_of(page: Page, testid: str) -> list[list[str]]:
    """The body rows of a table as the browser renders their cell texts."""
    rows = page.get_by_test_id(testid).locator("tbody tr")
    return [[c.strip() for c in rows.nth(i).locator("th, td").all_inner_texts()]
            for i in range(rows.count())]


def download(page: Page, testid: str) -> tuple[str, bytes]:
    """Click a download link as a person would: the file's suggested name and bytes."""
    with page.expect_download() as started:
        page.get_by_test_id(testid).click()
    done = started.value
    assert done.failure() is None
    with open(done.path(), "rb") as handle:
        return done.suggested_filename, handle.read()


def ledger_end(auditor: HubClient) -> int:
    """The sequence number the next ledger entry will get."""
    entries = ledger_since(auditor, 1)
    return entries[-1]["seq"] + 1 if entries else 1


def ledger_since(auditor: HubClient, start: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = auditor.http.request("GET", f"{API}/audit/entries",
                                    params={"start": start, "limit": 1000}).json()
        out += page
        if len(page) < 1000:
            return out
        start = page[-1]["seq"] + 1


def reads_of(entries: list[dict[str, Any]], study_id: int) -> list[str]:
    """Which console reads of the study's result these entries record (by payload digest)."""
    kinds = {payload_digest({"status": "completed", "via": "console", "as": kind}): kind
             for kind in ("page", "result.csv", "result.json", "chart:survival.png",
                          "chart:survival.svg", "chart:hazard_ratios.svg")}
    return [kinds.get(e["payload_digest"], "?") for e in entries
            if e["action"] == "study.result_access" and e["subject"] == f"study:{study_id}"
            and e["actor"] == "analyst"]


def test_km_charts_tables_and_downloads_on_the_audit_ledger(console, live, studies):
    view = studies["km"]
    result = view.result
    page = console.sign_in("consumer")
    shown = open_study(console, page, view.id, "survival")
    check_chart(page, "survival", KM_ALT, shown, "en")
    assert shown.headers["content-type"] == "image/svg+xml"
    expect(page.get_by_test_id("chart-survival").locator("figcaption")).to_have_text("Survival")
    # The groups table and the whole result are the API's result.
    groups = {row[0]: row for row in rows_of(page, "km-groups")}
    assert set(groups) == set(result["groups"]) == {"0", "1"}
    for name, curve in result["groups"].items():
        assert groups[name][1:] == [
            f"{curve['at_risk'][0]:,}",
            en(curve["median"], 2) if curve["median"] is not None else "not reached",
            en(curve["timeline"][-1], 2), en(curve["survival"][-1], 4)]
    assert json.loads(page.get_by_test_id("result-json").text_content()) == result
    log_rank = page.locator("dl.facts").filter(has_text="Log-rank test")
    expect(log_rank).to_contain_text(f"χ² = {en(result['logrank_statistic'], 3)}")
    screenshot(page, "study-km")

    # Downloads with the browser's session, each one read on the ledger.
    with HubClient(live.url, live.auditor_token) as auditor:
        start = ledger_end(auditor)
        name, body = download(page, "download-csv")
        assert name == f"study-{view.id}-km.csv"
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
        assert [(r["group"], float(r["time"]), float(r["survival"]) if r["survival"] else None)
                for r in rows] == [(g, t, s) for g, c in result["groups"].items()
                                   for t, s in zip(c["timeline"], c["survival"], strict=True)]
        name, body = download(page, "download-json")
        assert name == f"study-{view.id}-km.json"
        document = json.loads(body)
        assert document["study_id"] == view.id and document["status"] == "completed"
        assert document["nodes"] == dict.fromkeys(ROSSI_NODES, "completed")
        assert {k: v for k, v in document.items()
                if k not in ("study_id", "status", "nodes")} == result
        name, body = download(page, "download-survival-png")
        assert name == f"study-{view.id}-survival.png" and body[:8] == PNG_MAGIC
        assert len(body) > 10_000
        reads = reads_of(ledger_since(auditor, start), view.id)
    assert reads == ["result.csv", "result.json", "chart:survival.png"]
    # The same downloads through the page's own request context (the session cookie, no
    # click): the PNG is a PNG, and without the session it is the sign-in page instead.
    href = page.get_by_test_id("download-survival-png").get_attribute("href") or ""
    png = page.request.get(live.url + href)
    assert png.ok and png.headers["content-type"] == "image/png" and png.body()[:8] == PNG_MAGIC
    other = console.visitor()
    refused = other.request.get(f"{live.url}/console/studies/{view.id}/chart/survival.png",
                                max_redirects=0)
    assert refused.status == 303 and "/console/sign-in" in refused.headers["location"]


def test_cox_hazard_ratio_chart_and_table(console, live, studies):
    import math

    view = studies["cox"]
    result = view.result
    page = console.sign_in("consumer")
    shown = open_study(console, page, view.id, "hazard_ratios")
    check_chart(page, "hazard_ratios", COX_ALT, shown, "en")
    main = {row[0]: row for row in rows_of(page, "main-table")}
    assert set(main) == set(result["hazard_ratios"]) == {"fin", "age", "prio"}
    for term, hr in result["hazard_ratios"].items():
        lo, hi = (math.exp(b) for b in result["conf_int"][term])
        assert main[term][5:8] == [en(hr, 3), en(lo, 3), en(hi, 3)]
    concordance = page.locator("dl.facts").filter(has_text="Concordance (Harrell's C)")
    expect(concordance).to_contain_text(en(result["concordance"], 4))
    svg = page.request.get(live.url + (page.get_by_test_id("chart-hazard_ratios")
                                       .locator("img").get_attribute("src") or ""))
    assert svg.ok and "<!-- Cox model: hazard ratios -->" in svg.text()
    assert "style=" not in svg.text() and "<script" not in svg.text()
    screenshot(page, "study-cox")


def test_after_switching_to_chinese_the_chart_is_drawn_in_chinese(console, live, studies):
    view = studies["km"]
    page = console.sign_in("consumer")
    open_study(console, page, view.id, "survival")
    with page.expect_response(lambda r: "/chart/survival.svg?lang=zh" in r.url) as loaded:
        page.get_by_label("Language").select_option(label="简体中文")  # autosubmits
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    zh = Translator("zh")
    src = check_chart(page, "survival", zh(KM_ALT), loaded.value, "zh")
    caption = page.get_by_test_id("chart-survival").locator("figcaption")
    expect(caption).to_have_text(zh("Survival"))
    # The SVG the page references is the Chinese drawing: its title and its figure text.
    svg = page.request.get(live.url + src)
    assert svg.ok and svg.headers["content-language"] == "zh-Hans"
    text = svg.text()
    assert f"<title>{zh('Survival')}</title>" in text
    assert f"<!-- {ZH_KM_TITLE} -->" in text and "<!-- 生存概率 -->" in text
    assert "Kaplan–Meier survival (pooled over sites)" not in text
    # the numbers in the table stay the API's, written as Chinese (CLDR zh) writes them
    groups = {row[0]: row for row in rows_of(page, "km-groups")}
    for name, curve in view.result["groups"].items():
        assert groups[name][1] == zh.number(curve["at_risk"][0])
    screenshot(page, "study-km-zh")
    # English again: the same chart URL with ?lang=en, drawn in English
    page.get_by_label("语言").select_option(label="English")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    src = page.get_by_test_id("chart-survival").locator("img").get_attribute("src") or ""
    assert src.endswith("?lang=en")
    assert "<!-- Kaplan–Meier survival (pooled over sites) -->" in page.request.get(
        live.url + src).text()
