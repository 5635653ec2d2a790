"""The console's governance and value pages in a real browser (Debian's Chromium through
Playwright) over the shared live federation: the auditor's audit explorer (filters, verify
now, one entry's inclusion proof, the node-ledger cross-check, in Chinese once), the consent
overview, the model registry and a model card of a model trained by a real fl_train study,
and billing (an invoice and an earnings statement of a priced study, the CSV and JSON
downloads). Every number a page shows is checked against what the API answers the same user;
role refusals, the skip link and accessible labels on every page; and no CSP violation
anywhere (the ``console`` fixture checks that after every test).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from babel.numbers import format_decimal
from playwright.sync_api import Page, expect

from healthspace.client.sdk import API, HubClient
from healthspace.core.enums import StudyStatus
from healthspace.core.errors import HealthspaceError
from healthspace.core.models import StudyView
from healthspace.demo_data import showcase_cohort
from healthspace.ledger.checkpoint import Checkpoint
from healthspace.ledger.ledger import InclusionProof

from ..conftest import ROSSI_NODES, STRICT_POLICY
from ..helpers import cli
from .helpers import screenshot, unlabelled_controls

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]

MODEL_NAME = "browser-rossi"
TRAIN = {"target": "arrest", "features": ["fin", "age", "wexp", "prio"], "rounds": 3,
         "batch_size": 16, "learning_rate": 0.05, "seed": 7, "model_name": MODEL_NAME}
PRICES = {"per_study": 80, "per_person": 0.25, "per_compute_second": 1.5,
          "purpose_rates": {"research": 0.5}}
CONSENT_NODE = "dp_site"  # the steward's (strict_lab); only research, which both tiers allow
CONSENT = {"open": 34, "research_only": 17}  # explicit records written on the node
# (role, page): pages a role may not open; each shows the 403 page. Models and Billing are
# every role's pages (what each shows is the API's scoping, checked in their own tests).
REFUSED = [
    ("consumer", "/console/audit"),
    ("consumer", "/console/audit/nodes"),
    ("data_holder_admin", "/console/audit"),
    ("data_holder_admin", "/console/audit/entries/1"),
    ("consumer", "/console/consent"),
    ("auditor", "/console/consent"),
]


def ledger(live) -> list[dict[str, Any]]:
    """Every hub ledger entry, as ``GET /audit/entries`` pages them."""
    out: list[dict[str, Any]] = []
    with HubClient(live.url, live.auditor_token) as auditor:
        while True:
            batch = auditor.http.request("GET", f"{API}/audit/entries",
                                         params={"start": len(out) + 1, "limit": 1000}).json()
            out += batch
            if len(batch) < 1000:
                return out


def seqs(page: Page) -> list[int]:
    return [int(s) for s in page.locator("tr[data-seq]").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.seq)")]


def amount(text: str) -> Decimal:
    """A money figure as shown (``CN¥1,234.50``) as a number."""
    return Decimal(re.sub(r"[^\d.\-]", "", text))


def total(page: Page, key: str) -> str:
    return page.locator(f'[data-total="{key}"]').inner_text().strip()


def wait_for(what: str, check, timeout: float = 60) -> Any:
    """Until ``check()`` answers something truthy (the node agents publish on their next poll
    cycle, at most the federation's poll wait later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout}s")


def node_view(live, name: str):
    with live.consumer() as consumer:
        return next(n for n in consumer.list_nodes() if n.name == name)


def set_policy(live, node: str, policy: dict[str, Any], folder: Path) -> None:
    path = folder / f"{node}-policy.json"
    path.write_text(json.dumps(policy))
    cli(live, "node", "policy", "set", str(path), "--store", str(live.fed.nodes[node].store))


# ---------------------------------------------------------------- what the pages show


@dataclass
class Trained:
    study: StudyView
    model_id: int
    scored: StudyView


@pytest.fixture(scope="module")
def trained(live) -> Trained:
    """A model trained by a real fl_train study on the registry nodes, then one score study."""
    with live.consumer() as consumer:
        view = consumer.submit({"analysis": "fl_train", "nodes": ROSSI_NODES,
                                "title": "Browser model", "params": TRAIN})
        done = consumer.wait(view.id, timeout=180)
        assert done.status == StudyStatus.COMPLETED, (done.error, done.tasks)
        model_id = int(done.result["model"]["id"])
        scored = consumer.wait(consumer.submit({
            "analysis": "score", "params": {"model_id": model_id}, "nodes": ["rossi_a"],
            "purpose": "research", "title": "Browser scoring"}).id, timeout=120)
    assert scored.status == StudyStatus.COMPLETED, scored.error
    return Trained(done, model_id, scored)


@pytest.fixture(scope="module")
def priced(live, tmp_path_factory) -> StudyView:
    """A study on the steward's strict_site while it charges prices (fixed at submission),
    approved in both steps through the API and run to the end."""
    folder = tmp_path_factory.mktemp("priced")
    set_policy(live, "strict_site", {**STRICT_POLICY, "prices": PRICES}, folder)
    free = False
    try:
        wait_for("strict_site's prices published",
                 lambda: node_view(live, "strict_site").prices == PRICES)
        with live.consumer() as consumer:
            view = consumer.submit({"analysis": "cohort_count", "cohort": showcase_cohort(),
                                    "purpose": "research", "title": "Browser priced count",
                                    "nodes": ["strict_site"]})
        assert view.status == StudyStatus.AWAITING_APPROVAL
        set_policy(live, "strict_site", STRICT_POLICY, folder)  # free again for the others
        free = True
        with HubClient(live.url, live.steward_token) as steward:
            steward.approve(view.id, "strict_site", comment="steward ok")
            steward.approve(view.id, "strict_site", comment="ethics ok", ethics_ref="IRB-7")
        with live.consumer() as consumer:
            done = consumer.wait(view.id, timeout=90)
        assert done.status == StudyStatus.COMPLETED, done.error
        yield done
    finally:  # as every other test expects it
        if not free:
            set_policy(live, "strict_site", STRICT_POLICY, folder)
        wait_for("strict_site free again",
                 lambda: node_view(live, "strict_site").prices in (None, {}))


@pytest.fixture(scope="module")
def consented(live, tmp_path_factory) -> list[str]:
    """Explicit consent records on dp_site (tiers that change no count there); the person
    source values written, which the hub's pages must never show."""
    node = live.fed.nodes[CONSENT_NODE]
    con = duckdb.connect(str(node.store), read_only=True)
    people = [p for (p,) in con.execute(
        "SELECT person_source_value FROM person ORDER BY person_id LIMIT ?",
        [sum(CONSENT.values())]).fetchall()]
    con.close()
    tiers = [tier for tier, n in CONSENT.items() for _ in range(n)]
    path = tmp_path_factory.mktemp("consent") / "consent.csv"
    path.write_text("person_source_value,tier\n" +
                    "".join(f"{p},{t}\n" for p, t in zip(people, tiers, strict=True)))
    cli(live, "node", "consent", "import", str(path), "--store", str(node.store))
    expected = {"open": 30, "research_only": 20}  # rounded to 10 by the node
    wait_for("dp_site's consent counts published", lambda: all(
        (node_view(live, CONSENT_NODE).catalog.consent_tiers or {}).get(t) == n
        for t, n in expected.items()))
    return people


# ---------------------------------------------------------------- audit


def test_the_auditor_explores_filters_verifies_and_proves_the_ledger(console, live, trained):
    page = console.sign_in("auditor", next="/console/audit")
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit ledger")
    # Unfiltered: the API's first page, entry for entry.
    first = ledger(live)[:100]
    assert seqs(page) == [e["seq"] for e in first]
    row = page.locator(f"#entry-{first[0]['seq']}")
    expect(row).to_contain_text(first[0]["action"])
    expect(row).to_contain_text(first[0]["actor"])
    screenshot(page, "audit-explorer")

    # A filter through the form: the training study's task results, as the API lists them.
    subject = f"study:{trained.study.id}/*"
    page.get_by_label("Action", exact=True).fill("task.result")
    page.get_by_label("Subject", exact=True).fill(subject)
    page.get_by_label("Per page", exact=True).fill("1000")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page).to_have_url(re.compile(r"action=task.result"))
    everything = ledger(live)
    expected = [e["seq"] for e in everything if e["action"] == "task.result"
                and e["subject"].startswith(subject[:-1])]
    rounds = len(trained.study.result["rounds"])
    assert len(expected) >= len(ROSSI_NODES) * rounds  # every node, every round
    assert seqs(page) == expected
    actors = set(page.locator("tr[data-seq] td:nth-child(3)").all_inner_texts())
    assert actors == {e["actor"] for e in everything if e["seq"] in expected}
    assert len(actors) == len(ROSSI_NODES)
    screenshot(page, "audit-filtered")

    # Verify now: verified, over every entry the API lists (read just before and after).
    before = len(ledger(live))
    page.get_by_role("button", name="Verify now").click()
    report = page.get_by_role("status").filter(has_text="Verification")
    expect(report).to_contain_text("verified")
    expect(report).not_to_contain_text("FAILED")
    checked = int(report.locator("dt:text-is('Entries checked') + dd").inner_text()
                  .replace(",", ""))
    after = len(ledger(live))
    assert before <= checked <= after
    head_card = page.locator("section[aria-labelledby=head-h]")
    shown_size = int(head_card.locator("dt:text-is('Size') + dd").inner_text().replace(",", ""))
    with HubClient(live.url, live.auditor_token) as auditor:
        head = auditor.http.request("GET", f"{API}/audit/head").json()
        key = auditor.hub_key()["public_key"]
    assert 0 < shown_size <= head["size"] <= len(ledger(live))
    expect(head_card.locator("dd.hash").first).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    expect(head_card).to_contain_text(key)
    screenshot(page, "audit-verified")
    # The language switch on the report (a POST's page) lands on the explorer, translated.
    page.get_by_label("Language").select_option(label="简体中文")
    expect(page.get_by_role("heading", level=1)).to_have_text("审计账本")
    expect(page).to_have_url(re.compile(r"/console/audit$"))
    page.get_by_label("语言").select_option(label="English")
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit ledger")

    # One entry: its inclusion proof verified, and the proof shown verifies here too.
    seq = expected[0]
    console.goto(page, f"/console/audit?action=task.result&subject={subject}")
    page.get_by_role("link", name=str(seq), exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Entry {seq}")
    entry = next(e for e in everything if e["seq"] == seq)
    expect(page.locator("#check-proof")).to_have_class("ok")
    expect(page.locator("#check-proof .badge")).to_have_text("verified")
    expect(page.locator("#check-fields")).to_have_class("ok")
    expect(page.locator("#check-chain")).to_have_class("ok")
    expect(page.locator("section[aria-labelledby=entry-h]")).to_contain_text(entry["hash"])
    page.get_by_text("The proof as the API returns it").click()
    shown = json.loads(page.locator("details pre").inner_text())
    proof = InclusionProof(shown["seq"], shown["entry_hash"],
                           Checkpoint.from_dict(shown["checkpoint"]), shown["path"])
    assert proof.seq == seq and proof.entry_hash == entry["hash"]
    assert proof.verify([key]) and proof.checkpoint.size >= seq
    expect(page.locator("#cp-root")).to_have_text(proof.checkpoint.root)
    expect(page.locator("#cp-key")).to_have_text(key)
    screenshot(page, "audit-entry-proof")

    # The node-ledger cross-check: every node, each training node's checkpoints consistent.
    console.goto(page, "/console/audit")
    page.get_by_role("link", name="Cross-check with node ledgers").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Node ledgers")
    with live.consumer() as consumer:
        nodes = {n.name: n.org for n in consumer.list_nodes()}
    rows = page.locator("tbody tr[id^=node-]")
    assert sorted(r.removeprefix("node-") for r in rows.evaluate_all(
        "(rows) => rows.map((r) => r.id)")) == sorted(nodes)
    everything = ledger(live)
    for name in ROSSI_NODES:
        row = page.locator(f"#node-{name}")
        expect(row.get_by_role("rowheader")).to_contain_text(nodes[name])
        expect(row.locator(".badge")).to_have_text("consistent")
        recorded = sum(1 for e in everything if e["action"] == "task.result"
                       and e["actor"] in (name, f"node:{name}"))
        shown_runs = row.locator("td.num").last.inner_text().split()[0]
        assert int(shown_runs.replace(",", "")) == recorded > 0
    badges = set(page.locator("tbody .badge").all_inner_texts())
    assert badges <= {"consistent", "nothing published"}  # no node's ledger has a problem
    screenshot(page, "audit-nodes")

    # In Chinese once: the switch in the header, the same page translated.
    page.get_by_label("Language").select_option(label="简体中文")
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(page.get_by_role("heading", level=1)).to_have_text("节点账本")
    expect(page.locator(f"#node-{ROSSI_NODES[0]} .badge")).to_have_text("一致")
    page.get_by_role("link", name="返回条目列表").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("审计账本")
    page.get_by_role("button", name="立即验证").click()
    expect(page.get_by_role("status").filter(has_text="验证")).to_contain_text("已验证")
    screenshot(page, "audit-zh")


# ---------------------------------------------------------------- consent


@pytest.mark.parametrize("role", ["data_holder_admin", "operator"])
def test_consent_overview_shows_the_published_tier_counts_only(console, live, consented, role):
    page = console.sign_in(role, next="/console/consent")
    expect(page.get_by_role("heading", level=1)).to_have_text("Consent")
    with live.consumer() as consumer:
        nodes = consumer.list_nodes()
    mine = [n for n in nodes if role == "operator" or n.org == "strict_lab"]
    sections = page.locator("section[id^=consent-]").evaluate_all(
        "(els) => els.map((e) => e.id)")
    assert sorted(sections) == sorted(f"consent-{n.name}" for n in mine)  # own nodes only
    for node in mine:
        card = page.locator(f"#consent-{node.name}")
        published = node.catalog.consent_tiers if node.catalog else None
        if not published:
            expect(card).to_contain_text("has not published consent counts")
            continue
        for tier, value in published.items():
            cell = card.locator(f'td[data-tier="{tier}"]')
            shown = value if isinstance(value, str) else format_decimal(value, locale="en_GB")
            expect(cell).to_have_text(shown)
    # The counts the node wrote, rounded: 34 open → 30, 17 research only → 20.
    card = page.locator(f"#consent-{CONSENT_NODE}")
    expect(card.locator('td[data-tier="open"]')).to_have_text("30")
    expect(card.locator('td[data-tier="research_only"]')).to_have_text("20")
    expect(card.get_by_role("table").filter(has_text="when they changed")).to_be_visible()
    # No person-level data reaches the page: not one of the persons the records name.
    text = page.locator("main").inner_text() + page.content()
    assert not [p for p in consented if re.search(rf"\b{re.escape(p)}\b", text)]
    assert "person_source_value" not in text and "person_id" not in text
    screenshot(page, f"consent-{role}" if role == "operator" else "consent")


# ---------------------------------------------------------------- models


def test_a_trained_model_is_in_the_registry_with_its_card_and_score_study(console, live,
                                                                          trained):
    page = console.sign_in("consumer", next="/console/models")
    expect(page.get_by_role("heading", level=1)).to_have_text("Models")
    with live.consumer() as consumer:
        listed = consumer.models()
        model = consumer.model(trained.model_id)
    table = page.get_by_test_id("models")
    assert [int(i) for i in table.locator("tr[data-model]").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.model)")] == [m.id for m in listed]
    row = table.locator(f'tr[data-model="{trained.model_id}"]')
    expect(row.get_by_role("rowheader")).to_have_text(MODEL_NAME)
    expect(row).to_contain_text(", ".join(model.nodes))
    expect(row).to_contain_text(format_decimal(model.metrics["auc"], "#,##0.000",
                                               locale="en_GB"))
    expect(row.locator(".release")).to_have_text("deploy")
    screenshot(page, "models")
    # The name filter narrows it to this model's versions, as the API's ?name= does.
    page.get_by_label("Model name").fill(MODEL_NAME)
    page.get_by_role("button", name="Filter").click()
    with live.consumer() as consumer:
        named = [m.id for m in consumer.models(MODEL_NAME)]
    expect(page.locator("tr[data-model]")).to_have_count(len(named))
    assert named and trained.model_id in named

    page.locator(f'tr[data-model="{trained.model_id}"]').get_by_role("link", name=MODEL_NAME,
                                                                     exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Model {MODEL_NAME} v{model.version}")
    meta = page.get_by_test_id("model-meta")
    expect(meta).to_contain_text(f"#{trained.study.id}")
    expect(meta).to_contain_text(f"{model.rounds} (chosen: round {model.selected_round})")
    metrics = page.get_by_test_id("metrics")
    shown = 0
    for key, value in model.metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        text = format_decimal(value, locale="en_GB") if isinstance(value, int) else \
            format_decimal(value, "#,##0.0000", locale="en_GB")
        expect(metrics.locator(f'tr[data-metric="{key}"] td').first).to_have_text(text)
        shown += 1
    assert shown >= 3 and {"auc", "brier"} <= set(model.metrics)
    sites = page.get_by_test_id("sites")
    for node in model.nodes:
        site = sites.locator(f'tr[data-node="{node}"]')
        persons = model.contribution[node]["persons"]
        expect(site.locator("td").first).to_have_text(format_decimal(persons, locale="en_GB"))
        auc = model.card.performance_by_site[node]["auc"]
        expect(site).to_contain_text(format_decimal(auc, "#,##0.0000", locale="en_GB"))
    for feature in model.card.features:
        expect(page.get_by_test_id("features").get_by_role("rowheader", name=feature,
                                                           exact=True)).to_be_visible()
    # Deployed to a node: the score study is on the card, with what it scored.
    scoring = page.get_by_test_id("score-studies").get_by_role("row").filter(
        has=page.get_by_role("link", name=f"#{trained.scored.id}", exact=True))
    expect(scoring).to_contain_text("completed")
    expect(scoring).to_contain_text("rossi_a")
    expect(scoring.locator("td.num")).to_have_text(
        format_decimal(trained.scored.result["scored"], locale="en_GB"))
    expect(page.get_by_test_id("download")).to_have_count(0)  # deploy: weights stay put
    screenshot(page, "model-card")

    # Another organisation's admin whose nodes did not train it is refused, as by the API.
    steward = console.sign_in("data_holder_admin")
    response = console.goto(steward, f"/console/models/{trained.model_id}")
    with HubClient(live.url, live.steward_token) as api, pytest.raises(HealthspaceError) as no:
        api.model(trained.model_id)
    assert response.status == no.value.status_code == 403
    expect(steward.get_by_role("alert")).to_contain_text(f"may not see model {trained.model_id}")


# ---------------------------------------------------------------- billing


def _statement(live, token: str, period: str, **query: str) -> dict[str, Any]:
    with HubClient(live.url, token) as client:
        return client.http.request("GET", f"{API}/billing/statement",
                                   params={"period": period, **query}).json()


def _check_statement(page: Page, api: dict[str, Any]) -> None:
    """The page's statement is the API's: kind, organisation, totals, one row per line."""
    section = page.get_by_test_id("statement")
    expect(section).to_have_attribute("data-kind", api["kind"])
    expect(section).to_have_attribute("data-org", api["org"])
    totals = api["totals"]
    for key in ("invoiced", "platform_fee", "earned"):
        assert amount(total(page, key)) == Decimal(str(totals[key])), key
    assert total(page, "studies") == format_decimal(totals["studies"], locale="en_GB")
    assert total(page, "persons") == format_decimal(totals["persons"], locale="en_GB")
    assert total(page, "balanced") == "balanced" and totals["balanced"] is True
    rows = page.locator("tr[data-study]").evaluate_all(
        "(rows) => rows.map((r) => [Number(r.dataset.study), r.dataset.node])")
    assert rows == [[ln["study_id"], ln["node"]] for ln in api["lines"]]
    if rows:  # every amount in sight on a 1280-pixel screen, not behind a sideways scroll
        frame = page.locator(".scroll").first.bounding_box()
        for cell in (page.locator("tr[data-study] td.num").last,
                     page.locator("tfoot td.num").last):
            box = cell.bounding_box()
            assert frame and box and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1


def test_invoice_and_earnings_show_the_apis_amounts_and_download(console, live, priced):
    period = priced.updated_at.strftime("%Y-%m")
    # The consumer's invoice: the priced study's line charged what the API says.
    page = console.sign_in("consumer", next=f"/console/billing?period={period}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Billing")
    invoice = _statement(live, live.consumer_token, period)
    assert invoice["kind"] == "invoice" and invoice["org"] == "pharma"
    _check_statement(page, invoice)
    (line,) = [ln for ln in invoice["lines"] if ln["study_id"] == priced.id]
    assert line["charge"] > 0 and line["node"] == "strict_site"
    row = page.locator(f'tr[data-study="{priced.id}"][data-node="strict_site"]')
    charge, fee, earned = (amount(t) for t in row.locator("td.num").all_inner_texts()[-3:])
    assert (charge, fee, earned) == tuple(Decimal(str(line[k])) for k in
                                          ("charge", "platform_fee", "earned"))
    expect(row.get_by_role("rowheader")).to_contain_text("Browser priced count")
    screenshot(page, "billing")

    # CSV through the browser's own download; JSON with the browser's cookies.
    with page.expect_download() as download:
        page.get_by_test_id("csv").click()
    assert download.value.suggested_filename == f"pharma-{period}-invoice.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [int(r["study_id"]) for r in rows] == [ln["study_id"] for ln in invoice["lines"]]
    for column, key in (("charge", "invoiced"), ("platform_fee", "platform_fee"),
                        ("earned", "earned")):
        assert sum(Decimal(r[column]) for r in rows) == Decimal(str(invoice["totals"][key]))
    (mine,) = [r for r in rows if int(r["study_id"]) == priced.id]
    assert Decimal(mine["charge"]) == Decimal(str(line["charge"]))
    href = page.get_by_test_id("json").get_attribute("href")
    fetched = page.request.get(live.url + href)
    assert fetched.status == 200
    assert fetched.headers["content-disposition"] == \
        f'attachment; filename="pharma-{period}-invoice.json"'
    assert fetched.json() == _statement(live, live.consumer_token, period)

    # Another organisation's statement is the API's refusal, shown, with nothing of it.
    response = console.goto(page, f"/console/billing?period={period}&org=strict_lab")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("your own organisation only")
    expect(page.get_by_test_id("statement")).to_have_count(0)

    # The steward's earnings: what strict_site earned from that study, after the fee.
    steward = console.sign_in("data_holder_admin", next=f"/console/billing?period={period}")
    earnings = _statement(live, live.steward_token, period)
    assert earnings["kind"] == "earnings" and earnings["org"] == "strict_lab"
    _check_statement(steward, earnings)
    (earned,) = [ln for ln in earnings["lines"] if ln["study_id"] == priced.id]
    assert earned["earned"] == line["earned"] > 0
    assert Decimal(str(earned["charge"])) == Decimal(str(earned["platform_fee"])) + \
        Decimal(str(earned["earned"]))
    expect(steward.get_by_test_id("accounts")).to_have_count(0)  # holders have no quota
    screenshot(steward, "billing-earnings")
    with steward.expect_download() as download:
        steward.get_by_test_id("json").click()
    assert json.loads(Path(download.value.path()).read_text()) == earnings

    # The operator picks strict_lab's earnings and sees the same statement.
    operator = console.sign_in("operator", next=f"/console/billing?period={period}")
    _check_statement(operator, _statement(live, live.fed.operator_token, period))
    operator.get_by_label("Organisation").select_option("strict_lab")
    operator.get_by_label("Statement", exact=True).select_option(label="Earnings statement")
    operator.get_by_role("button", name="Show").click()
    expect(operator).to_have_url(re.compile(r"org=strict_lab&kind=earnings"))
    _check_statement(operator, _statement(live, live.fed.operator_token, period,
                                          org="strict_lab", kind="earnings"))
    screenshot(operator, "billing-operator")
    # A deposit that is not a number: the page again with the reason, nothing changed; the
    # language switch on it lands on the billing page, translated.
    with HubClient(live.url, live.fed.operator_token) as op:
        account = op.account("pharma")
    form = operator.locator('form[action$="/billing/accounts/pharma"]')
    form.get_by_label("Add deposit").fill("lots")
    form.get_by_role("button", name="Save").click()
    expect(operator.get_by_role("alert")).to_contain_text("Amounts are numbers")
    with HubClient(live.url, live.fed.operator_token) as op:
        assert op.account("pharma") == account
    operator.get_by_label("Language").select_option(label="简体中文")
    expect(operator.get_by_role("heading", level=1)).to_have_text("账单")
    expect(operator.get_by_test_id("statement")).to_be_visible()


# ---------------------------------------------------------------- refusals, keyboard, labels


@pytest.mark.parametrize(("role", "path"), REFUSED)
def test_a_role_is_refused_the_governance_pages(console, role, path):
    page = console.sign_in(role)
    response = console.goto(page, path)
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.get_by_role("alert")).to_contain_text("This page is for:")
    expect(page.get_by_role("link", name="Back to the dashboard")).to_be_visible()
    name = path.removeprefix("/console/").replace("/", "-")
    screenshot(page, f"forbidden-{role}-{name}")


@pytest.mark.parametrize(("role", "path"), [
    ("auditor", "/console/audit"),
    ("auditor", "/console/audit/entries/1"),
    ("operator", "/console/audit/nodes"),
    ("data_holder_admin", "/console/consent"),
    ("consumer", "/console/models"),
    ("consumer", "/console/models/{model}"),
    ("consumer", "/console/billing"),
    ("operator", "/console/billing"),
])
def test_skip_link_first_and_every_control_labelled(console, trained, role, path):
    page = console.sign_in(role)
    response = console.goto(page, path.format(model=trained.model_id))
    assert response.status == 200
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()  # the first Tab stop
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    count, bad = unlabelled_controls(page)
    assert count >= 1 and bad == []
