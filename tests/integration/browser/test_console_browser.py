"""The web console in a real browser (Debian's Chromium through Playwright) over the shared
live federation: sign-in per role, a two-level approval decided in the approvals inbox, the
result on the consumer's study page, the auditor's ledger tile, Chinese, role refusals,
keyboard basics and accessible labels, and no CSP violation on any page (the ``console``
fixture checks that after every test).

One test function per flow: a flow for a new page (the study builder, audit, consent,
models, billing) is a new function here, and a new page's refusals are rows of REFUSED.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import yaml
from playwright.sync_api import expect

from healthspace.client.sdk import API, HubClient
from healthspace.core.enums import Role, StudyStatus
from healthspace.demo_data import showcase_cohort
from healthspace.hub.console.builder_form import example_datasets
from healthspace.hub.console.i18n import Translator
from healthspace.hub.console.web import NAV, PREFIX

from ..reference import released, t2d_feasibility
from .helpers import fill_token_form, nav_labels, screenshot, unlabelled_controls

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]

USERS = {"operator": "operator", "consumer": "analyst", "data_holder_admin": "steward",
         "auditor": "auditor"}
KPI_ROLES = {"operator", "auditor"}
# role -> the console's pages it may not open (every NAV page not for it): each is the 403
# page, in a real browser, with the way back.
REFUSED = {role: [PREFIX + path for path, _label, roles in NAV if Role(role) not in roles]
           for role in USERS}
ZH_NAV = {"Dashboard": "仪表盘", "Catalog": "数据目录", "Studies": "研究", "Approvals": "审批"}


def yaml_example(stem: str) -> dict:
    """A bundled analysis-dataset spec, as the builder sends it."""
    text = resources.files("healthspace.examples").joinpath(f"{stem}.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def nav_for(role: str) -> list[str]:
    """The navigation labels the console's NAV gives ``role`` (English)."""
    return [label for _path, label, roles in NAV if Role(role) in roles]


def approve_both_steps(console, study_id: int, title: str, shots: bool = False) -> None:
    """The data-holder admin decides the steward step, then the ethics step (by keyboard
    alone: Enter submits), of ``study_id`` at strict_site, from the dashboard's link."""
    steward = console.sign_in("data_holder_admin")
    pending = steward.get_by_role("link", name=re.compile(rf"^#{study_id} {re.escape(title)}"))
    expect(pending).to_be_visible()  # the dashboard lists what waits for this steward
    pending.click()
    expect(steward).to_have_url(re.compile(r"/console/approvals"))
    card = steward.locator(f"#study-{study_id}-strict_site")
    expect(card.get_by_role("heading", level=2)).to_contain_text(title)
    expect(card).to_contain_text("two_level")
    expect(card.get_by_label("Ethics committee reference")).to_have_count(0)  # steward first
    if shots:
        screenshot(steward, "approvals-inbox")
    card.get_by_label("Comment", exact=True).fill("data steward ok")
    card.get_by_role("button", name="Approve (steward)").click()
    expect(steward.get_by_role("status")).to_have_text("Decision recorded.")
    card = steward.locator(f"#study-{study_id}-strict_site")
    reference = card.get_by_label("Ethics committee reference")
    expect(reference).to_be_visible()
    if shots:
        screenshot(steward, "approvals-ethics-step")
    reference.focus()
    steward.keyboard.type("IRB-2026-042")
    steward.keyboard.press("Tab")
    steward.keyboard.type("ethics committee approval")
    steward.keyboard.press("Enter")
    expect(steward.get_by_role("status")).to_have_text("Decision recorded.")
    expect(steward.locator(f"#study-{study_id}-strict_site")).to_have_count(0)


@pytest.mark.parametrize("role", list(USERS))
def test_each_role_signs_in_with_a_token_and_sees_its_dashboard(console, role):
    page = console.sign_in(role)
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.locator(".who")).to_contain_text(f"{USERS[role]} · ")
    expect(page.locator(".who")).to_contain_text(f" · {role}")
    labels = nav_labels(page)
    assert labels == nav_for(role)
    assert ("Approvals" in labels) == (role in ("operator", "data_holder_admin"))
    here = page.locator("header.top").get_by_role("link", name="Dashboard", exact=True)
    expect(here).to_have_attribute("aria-current", "page")
    # KPI tiles for the operator and the auditor only; pending approvals for deciders.
    expect(page.locator("#kpi-h")).to_have_count(1 if role in KPI_ROLES else 0)
    expect(page.locator("#pending-h")).to_have_count(0 if role == "consumer" else 1)
    screenshot(page, f"dashboard-{role}")
    # Signing out ends the session: the dashboard asks for sign-in again.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    console.goto(page, "/console/dashboard")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console/dashboard"))


def test_a_wrong_token_is_refused_with_a_message(console):
    page = console.visitor()
    console.goto(page, "/console/studies")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console/studies"))
    screenshot(page, "signin")
    fill_token_form(page, "hs_not-a-real-token")
    expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    # The form is shown again, still ready; a good token then lands on the page first asked.
    fill_token_form(page, console.tokens["consumer"])
    expect(page).to_have_url(re.compile(r"/console/studies$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Studies")


def test_a_user_signs_in_with_name_and_password(console, live):
    """A password set through the API (stored as an Argon2id hash) signs the user in through
    the second form; a wrong one is refused with a message and the name kept."""
    with live.fed.operator() as op:
        op.add_user("reviewer", "pharma", "consumer")
        token = op.issue_token("reviewer").token
    with HubClient(live.url, token) as reviewer:
        reviewer.set_password("correct horse battery staple")
    page = console.visitor()
    console.goto(page, "/console/sign-in")
    form = page.locator("form", has=page.get_by_label("Password", exact=True))
    form.get_by_label("User name").fill("reviewer")
    form.get_by_label("Password", exact=True).fill("correct horse battery")
    form.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    form = page.locator("form", has=page.get_by_label("Password", exact=True))
    expect(form.get_by_label("User name")).to_have_value("reviewer")
    form.get_by_label("Password", exact=True).fill("correct horse battery staple")
    form.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/console/dashboard$"))
    expect(page.locator(".who")).to_contain_text("reviewer · pharma · consumer")
    cookie = next(c for c in page.context.cookies() if c["name"] == "hs_console")
    assert cookie["httpOnly"] and cookie["sameSite"] in ("Lax", "Strict")


def test_two_level_approval_in_the_inbox_and_the_result_on_the_study_page(console, live):
    """A consumer's study on the L3 strict_site waits for the steward and the ethics step;
    the data-holder admin decides both in the browser; the consumer sees the result."""
    with live.consumer() as consumer:
        view = consumer.submit({"title": "Browser approval", "analysis": "cohort_count",
                                "purpose": "drug_development", "cohort": showcase_cohort(),
                                "nodes": ["strict_site"]})
    assert view.status == StudyStatus.AWAITING_APPROVAL
    study = f"/console/studies/{view.id}"
    analyst = console.sign_in("consumer", next=study)
    expect(analyst.get_by_test_id("study-status")).to_have_text("awaiting_approval")

    approve_both_steps(console, view.id, "Browser approval", shots=True)

    # The hub holds both decisions, by the steward, with the reference; the study ran.
    with HubClient(live.url, live.steward_token) as hub:
        done = [a for a in hub.approvals("approved")
                if a["study_id"] == view.id and a["node"] == "strict_site"]
    assert [(a["step"], a["by"], a["ethics_ref"]) for a in done[0]["approvals"]] == [
        ("steward", "steward", None), ("ethics", "steward", "IRB-2026-042")]
    with live.consumer() as consumer:
        final = consumer.wait(view.id, timeout=90)
    assert final.status == StudyStatus.COMPLETED
    assert final.result["sites"] == {
        "strict_site": released(t2d_feasibility(live.data / "hospital_3"), 11)}

    analyst.reload()
    expect(analyst.get_by_test_id("study-status")).to_have_text("completed")
    shown = json.loads(analyst.get_by_test_id("result-json").text_content())
    assert shown == final.result
    nodes = analyst.get_by_role("table").filter(has=analyst.get_by_role(
        "columnheader", name="Decision"))
    expect(nodes.get_by_role("row").filter(has_text="strict_site")).to_contain_text("completed")
    screenshot(analyst, "study-detail")
    # The consumer's studies list links to it, with its status.
    console.goto(analyst, "/console/studies?status=completed")
    row = analyst.get_by_role("row").filter(has=analyst.get_by_role("link", name=str(view.id),
                                                                      exact=True))
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("Browser approval")


def test_a_rejection_with_its_reason_reaches_the_consumers_timeline(console, live):
    """The steward rejects in the inbox (after the browser's confirm dialog); the consumer's
    study page shows the refusal and the steward's words on the node's timeline."""
    with live.consumer() as consumer:
        view = consumer.submit({"title": "Browser rejection", "analysis": "cohort_count",
                                "purpose": "research", "cohort": showcase_cohort(),
                                "nodes": ["strict_site"]})
    steward = console.sign_in("data_holder_admin", next="/console/approvals")
    card = steward.locator(f"#study-{view.id}-strict_site")
    reason = card.get_by_label("Why (shown to the consumer)")
    reason.fill("no data-sharing agreement with this sponsor yet")
    asked = []
    steward.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    card.get_by_role("button", name="Reject").click()
    expect(steward.get_by_role("status")).to_have_text("Decision recorded.")
    assert asked == ["Reject this study for this node?"]
    expect(steward.locator(f"#study-{view.id}-strict_site")).to_have_count(0)
    with live.consumer() as consumer:
        final = consumer.wait(view.id, timeout=60)
    assert final.status == StudyStatus.REJECTED
    analyst = console.sign_in("consumer", next=f"/console/studies/{view.id}")
    expect(analyst.get_by_test_id("study-status")).to_have_text("rejected")
    timeline = analyst.locator(".timeline").first
    expect(timeline).to_contain_text("no data-sharing agreement with this sponsor yet")
    screenshot(analyst, "study-rejected")


def test_the_auditor_sees_the_verified_ledger_tile(console, live):
    page = console.sign_in("auditor")
    tile = page.locator(".tile").filter(has_text="Audit ledger")
    expect(page.get_by_test_id("ledger-status")).to_have_text("verified")
    expect(tile).to_have_class(re.compile(r"\bok\b"))
    # The tile is the KPI service's answer, as the API gives it.
    period = page.locator("#kpi-h").inner_text()
    month = re.search(r"\((\d{4}-\d{2})\)", period).group(1)
    with HubClient(live.url, live.auditor_token) as auditor:
        ledger = auditor.kpi(month)["safety"]["ledger"]
    assert ledger["ok"] is True
    shown = int(re.sub(r"\D", "", tile.locator(".trend").inner_text()))
    assert 0 < shown <= ledger["entries"]  # the API read happened after the page


def test_switching_to_chinese_translates_the_navigation_and_stays(console):
    page = console.sign_in("operator")
    page.get_by_label("Language").select_option(label="简体中文")  # autosubmits (console.js)
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(page.get_by_role("heading", level=1)).to_have_text("仪表盘")
    labels = nav_labels(page)
    assert labels == [Translator("zh")(label) for label in nav_for("operator")]
    assert set(ZH_NAV.values()) <= set(labels) and not set(ZH_NAV) & set(labels)
    expect(page.get_by_test_id("ledger-status")).to_have_text("已验证")
    expect(page.locator("a.skip")).to_have_text("跳到正文")
    screenshot(page, "dashboard-zh")
    # The choice is remembered (a cookie) on the next page; English again on request.
    page.get_by_role("link", name="数据目录").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("数据目录")
    page.get_by_label("语言").select_option(label="English")
    expect(page.get_by_role("heading", level=1)).to_have_text("Catalog")
    expect(page.locator("html")).to_have_attribute("lang", "en")


@pytest.mark.parametrize("role", [role for role in USERS if REFUSED[role]])
def test_a_role_is_refused_every_other_roles_page(console, role):
    page = console.sign_in(role)
    for path in REFUSED[role]:
        response = console.goto(page, path)
        assert response.status == 403, path
        expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
        expect(page.get_by_role("alert")).to_contain_text("This page is for:")
        expect(page.get_by_role("link", name="Back to the dashboard")).to_be_visible()
        assert path.removeprefix(PREFIX) not in [
            a.removeprefix(console.url + PREFIX) for a in page.locator(
                "header.top nav a").evaluate_all("(els) => els.map((e) => e.href)")]
    first = REFUSED[role][0].removeprefix(PREFIX).replace("/", "-")
    screenshot(page, f"forbidden-{role}{first}")


def test_catalog_and_studies_show_what_the_api_answers(console, live):
    page = console.sign_in("consumer")
    console.goto(page, "/console/catalog")
    shown = {h.split(" · ")[0].strip() for h in
             page.locator("section.dataset h2").all_inner_texts()}
    with live.consumer() as consumer:
        nodes = {n.name for n in consumer.list_nodes()}
        registries = {r.name for r in consumer.registries()}
        listed = consumer.http.request("GET", f"{API}/studies", params={"limit": 200}).json()
    mine = {s["id"] for s in listed["studies"]}
    assert shown == nodes
    rows = page.get_by_test_id("registries").locator("tr[data-registry]")
    assert set(rows.evaluate_all("(els) => els.map((e) => e.dataset.registry)")) == registries
    expect(page.locator("#node-strict_site").locator("xpath=..")).to_contain_text("L3")
    screenshot(page, "catalog")
    console.goto(page, "/console/studies")
    ids = {int(t) for t in page.locator("tbody tr td:first-child a").all_inner_texts()}
    assert ids == mine  # only the consumer's own studies (both lists hold up to 200)
    screenshot(page, "studies")


@pytest.mark.parametrize(("role", "path"), [
    (None, "/console/sign-in"),
    ("operator", "/console/dashboard"),
    ("consumer", "/console/catalog"),
    ("consumer", "/console/studies"),
    ("consumer", "/console/studies/new"),
    ("data_holder_admin", "/console/approvals?status=pending"),
])
def test_keyboard_skip_link_and_every_control_labelled(console, live, role, path):
    page = console.visitor() if role is None else console.sign_in(role)
    console.goto(page, path)
    page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    expect(skip).to_be_focused()  # the first Tab stop on every page
    box = skip.bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0  # shown when focused
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    count, bad = unlabelled_controls(page)
    assert count >= 1 and bad == []


def test_a_study_page_is_keyboard_reachable_and_labelled(console, live):
    with live.consumer() as consumer:  # a study of its own: no test relies on another's
        view = consumer.submit({"title": "Keyboard", "analysis": "cohort_count",
                                "purpose": "research", "cohort": showcase_cohort(),
                                "nodes": ["hospital_1"]})
        assert consumer.wait(view.id, timeout=90).status == StudyStatus.COMPLETED
    page = console.sign_in("consumer", next=f"/console/studies/{view.id}")
    expect(page.get_by_test_id("study-status")).to_have_text("completed")
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    count, bad = unlabelled_controls(page)
    assert count >= 1 and bad == []
    # Tab walks the header: the navigation links, then the language switch, then sign-out.
    order = []
    for _ in range(len(nav_for("consumer")) + 2):
        page.keyboard.press("Tab")
        order.append(page.evaluate("(e => e.tagName === 'SELECT' ? e.id : e.textContent.trim())"
                                   "(document.activeElement)"))
    assert order == [*nav_for("consumer"), "lang-select", "Sign out"]


def test_the_csp_watch_catches_an_inline_style(console):
    """The watch the ``console`` fixture relies on does see a violation (then clears it)."""
    page = console.sign_in("consumer")
    page.evaluate("() => { const s = document.createElement('style');"
                  " s.textContent = 'body { color: red }'; document.head.appendChild(s); }")
    page.wait_for_timeout(200)
    for _ in range(50):
        if console.watch.csp and console.watch.console:
            break
        page.wait_for_timeout(100)
    assert console.watch.csp and console.watch.csp[0]["directive"].startswith("style-src")
    assert any("Content Security Policy" in m for m in console.watch.console)
    console.watch.clear()


# The gliclazide-or-metformin starters at strict_site, as the builder flow enters them.
STARTERS = {"entry": {"drug": {"codes": ["ATC:A10BB09", "ATC:A10BA02"]}},
            "inclusion": [{"age": {"min": 18}},
                          {"observation_period": {"min_prior_observation_days": 0}}]}


def test_build_a_study_with_both_previews_approve_it_and_see_its_chart(console, live):
    """The whole consumer path in the browser: code search, the policy check and the live
    preview in place, a KM study submitted from the form, both approval steps by the data
    holder, then the result with its chart on the study page."""
    page = console.sign_in("consumer", next="/console/studies/new")
    page.get_by_label("Entry event", exact=True).select_option("drug")
    codes = page.get_by_label("Entry codes", exact=True)
    codes.fill("ATC:A10BB")  # code search over what the nodes published
    page.locator(".suggest").get_by_role("button", name="ATC:A10BB09", exact=True).click()
    expect(codes).to_have_value("ATC:A10BB09, ")
    expect(codes).to_be_focused()
    codes.press_sequentially("ATC:A10BA02")
    page.get_by_label("Age from", exact=True).fill("18")
    page.get_by_label("Prior observation (days)", exact=True).fill("0")
    page.get_by_label("strict_site", exact=True).check()
    page.get_by_label("hospital_3", exact=True).check()  # for the previews; unticked later
    page.get_by_label("Purpose", exact=True).select_option("drug_development")
    page.get_by_label("Title", exact=True).fill("Builder KM")
    page.get_by_label("Analysis", exact=True).select_option("km")
    expect(page.locator("#params-km")).to_be_visible()
    expect(page.locator("#params-glm")).to_be_hidden()  # only the chosen analysis' fields
    page.get_by_label("Analysis dataset", exact=True).select_option("gliclazide_hf_dataset")
    # the column fields suggest that dataset's columns (a datalist the script fills)
    columns = page.locator("#dataset-columns option").evaluate_all(
        "(els) => els.map((e) => e.value)")
    assert columns == example_datasets()["gliclazide_hf_dataset"][2]
    expect(page.locator("#f-km-duration")).to_have_attribute("list", "dataset-columns")
    page.locator("#f-km-duration").fill("time")
    page.locator("#f-km-event").fill("event")
    page.locator("#f-km-group").fill("drug")
    spec = {"analysis": "km", "cohort": STARTERS, "nodes": ["strict_site", "hospital_3"],
            "purpose": "drug_development", "dataset": yaml_example("gliclazide_hf_dataset"),
            "params": {"duration": "time", "event": "event", "group": "drug"}}

    # The policy decision preview, in place: what the API's check answers, reasons and all.
    page.get_by_role("button", name="Check policy").click()
    result = page.locator("#check-result")
    expect(result.get_by_test_id("decision-strict_site")).to_have_text("needs_approval")
    expect(result.get_by_test_id("decision-hospital_3")).to_have_text("allow")
    with live.consumer() as consumer:
        checked = consumer.check(spec)
    assert (checked["strict_site"].outcome, checked["hospital_3"].outcome) == (
        "needs_approval", "allow")
    for node in ("strict_site", "hospital_3"):
        row = result.get_by_role("row").filter(has_text=node)
        for reason in checked[node].reasons:
            expect(row).to_contain_text(reason.message)
    expect(page).to_have_url(re.compile(r"/console/studies/new$"))  # no page load

    # The live feasibility preview, in place, followed until the nodes answer: an obfuscated
    # count from hospital_3; the L3 site does not answer previews and says why.
    page.get_by_role("button", name="Preview count").click()
    preview = page.locator("#preview-result .preview")
    expect(preview.get_by_test_id("count-hospital_3")).to_have_text(re.compile(r"^[\d,]+$"),
                                                                    timeout=60_000)
    preview_id = int(re.search(r"preview-(\d+)", preview.get_attribute("id")).group(1))
    with live.consumer() as consumer:
        previewed = consumer.study(preview_id)
    assert previewed.preview and previewed.cohort == STARTERS
    assert previewed.result["obfuscated"] is True
    shown = preview.get_by_test_id("count-hospital_3").inner_text()
    assert int(shown.replace(",", "")) == previewed.result["sites"]["hospital_3"]
    assert previewed.decisions["strict_site"]["outcome"] == "deny"
    expect(preview.get_by_role("row").filter(has_text="strict_site")).to_contain_text(
        "does not answer previews")
    screenshot(page, "builder-previews")
    page.get_by_label("hospital_3", exact=True).uncheck()

    page.get_by_role("button", name="Submit study").click()
    expect(page).to_have_url(re.compile(r"/console/studies/\d+$"))
    study_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_test_id("study-status")).to_have_text("awaiting_approval")
    with live.consumer() as consumer:
        stored = consumer.study(study_id)
    assert (stored.analysis, stored.cohort, stored.nodes, stored.title) == (
        "km", STARTERS, ["strict_site"], "Builder KM")
    assert stored.dataset == yaml_example("gliclazide_hf_dataset")

    approve_both_steps(console, study_id, "Builder KM")
    with live.consumer() as consumer:
        final = consumer.wait(study_id, timeout=120)
    assert final.status == StudyStatus.COMPLETED, final.error
    page.reload()
    expect(page.get_by_test_id("study-status")).to_have_text("completed")
    assert json.loads(page.get_by_test_id("result-json").text_content()) == final.result
    chart = page.locator("figure img").first
    expect(chart).to_have_attribute("alt", re.compile(r"\S"))
    chart.scroll_into_view_if_needed()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=chart.element_handle())
    screenshot(page, "builder-study-km")


def test_a_similar_patient_lookup_from_the_form_shows_its_tables_and_km_plot(console, live):
    """The clinician's path: the worked example filled in, a field error shown in place,
    then the lookup submitted to three hospitals and its answer on the study page."""
    page = console.sign_in("consumer", next="/console/similar-patients?example=1")
    expect(page.get_by_label("Age", exact=True)).to_have_value("62")
    page.get_by_label("Similar patients per node", exact=True).fill("3")
    for node in ("hospital_1", "hospital_2", "hospital_3"):
        page.get_by_label(node, exact=True).check()
    page.get_by_role("button", name="Find similar patients").click()
    expect(page.get_by_role("alert").first).to_contain_text("10")  # k below the minimum
    expect(page).to_have_url(re.compile(r"/console/similar-patients$"))
    page.get_by_label("Similar patients per node", exact=True).fill("40")
    page.get_by_role("button", name="Find similar patients").click()
    expect(page).to_have_url(re.compile(r"/console/studies/\d+$"))
    study_id = int(page.url.rsplit("/", 1)[1])
    with live.consumer() as consumer:
        final = consumer.wait(study_id, timeout=120)
    assert final.status == StudyStatus.COMPLETED, final.error
    assert (final.analysis, final.purpose, final.nodes) == (
        "similar_patients", "clinical_care", ["hospital_1", "hospital_2", "hospital_3"])
    page.reload()
    expect(page.get_by_test_id("study-status")).to_have_text("completed")
    groups = page.get_by_test_id("cds-groups")
    for group in final.result["groups"]:
        if group["kind"] == "treatment":
            expect(groups).to_contain_text(group["name"])
    expect(page.get_by_test_id("cds-nodes")).to_contain_text("hospital_2")
    chart = page.locator("figure img").first
    expect(chart).to_have_attribute("alt", re.compile(r"\S"))
    chart.scroll_into_view_if_needed()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=chart.element_handle())
    screenshot(page, "similar-patients-result")
