"""The console's Models and Billing pages against the API, for every role.

One data space is built once per module through the API: three federated trainings (two of
pharma's, one of biotech's; the first released for download, the others for deployment only)
and two counts, every task answered with a signed meter at the nodes' published prices, so
that every study settles; then a count in the next month. Each test copies it.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from babel.numbers import format_currency, format_decimal
from flkit import SEEDS, answer, site_table
from hubkit import CC_PARTIAL, Headers, Hub, Space, copy_space
from test_console import _csrf, sign_in

from healthspace.core.canonical import canonical_json
from healthspace.core.envelope import seal

PRICES_A = {"per_study": 50, "per_person": 0.125, "per_compute_second": 0.0333,
            "purpose_rates": {"research": 0.5}}
PRICES_B = {"per_study": 10, "per_person": 0.013, "per_compute_second": 0.01}
TRAIN = {"target": "y", "features": ["x1", "x2"], "rounds": 2}
MARCH, APRIL = "2025-03", "2025-04"


# ---------------------------------------------------------------- building the space


def _policies(space: Space, version: int, release: str) -> None:
    for node, prices in ((space.node_a, PRICES_A), (space.node_b, PRICES_B)):
        space.hub.publish_policy(node, {"level": "L1", "version": version, "prices": prices,
                                        "model_release": release})


def _train(space: Space, who: Headers, name: str) -> int:
    hub, cons = space.hub, {n: site_table(n) for n in SEEDS}
    study = hub.submit(who, analysis="fl_train", nodes=["node-a", "node-b"],
                       params={**TRAIN, "model_name": name}, title=f"train {name}")
    for _ in range(20):
        view = hub.study(hub.operator, study["id"])
        if view["status"] != "running":
            break
        for node, headers in (("node-a", space.node_a), ("node-b", space.node_b)):
            task = hub.next_task(headers)
            if task is not None:
                answer(hub, node, headers, task, cons[node])
    assert view["status"] == "completed", view
    return int(view["result"]["model"]["id"])


def _count(space: Space, who: Headers, nodes: dict[str, tuple[Headers, int]],
           title: str) -> int:
    """A cohort count on ``nodes`` (name -> headers, persons), each answer metered."""
    hub = space.hub
    study = hub.submit(who, nodes=list(nodes), title=title)
    for name, (headers, persons) in nodes.items():
        task = hub.next_task(headers)
        assert task is not None
        payload = {"status": "completed", "partial": CC_PARTIAL}
        meter = {"analysis": task["analysis"], "status": "completed", "persons": persons,
                 "records_scanned": 10 * persons, "seconds": 2.5,
                 "bytes": len(canonical_json(payload))}
        envelope = seal("task.result", payload, hub.keys[name], node_id=hub.nodes[name],
                        study_id=task["study_id"], round=task["round"], meter=meter,
                        clock=hub.clock)
        hub.ok("POST", f"/node/tasks/{task['task_id']}/result", headers,
               json=envelope.model_dump(mode="json"))
    assert hub.study(who, study["id"])["status"] == "completed"
    return int(study["id"])


class World:
    def __init__(self, space: Space) -> None:
        self.space, self.hub = space, space.hub
        self.carol = self.admin_p = space.alice
        self.models: dict[str, int] = {}

    def who(self, name: str) -> Headers:
        s = self.space
        return {"alice": s.alice, "bob": s.bob, "carol": self.carol, "admin_a": s.admin_a,
                "admin_b": s.admin_b, "admin_p": self.admin_p, "auditor": s.auditor,
                "operator": self.hub.operator}[name]


def _build(space: Space) -> World:
    world, hub = World(space), space.hub
    hub.org("biotech", "consumer")
    world.carol = hub.user("carol", "biotech", "consumer")
    world.admin_p = hub.user("admin-p", "payer", "data_holder_admin")
    _policies(space, 2, "download")
    world.models["download"] = _train(space, space.alice, "risk")
    _policies(space, 3, "deploy")
    world.models["deploy"] = _train(space, space.alice, "risk")
    world.models["biotech"] = _train(space, world.carol, "other")
    hub.clock.advance(minutes=5)
    _count(space, space.alice, {"node-a": (space.node_a, 40), "node-b": (space.node_b, 45)},
           "bleeds in march")
    _count(space, world.carol, {"node-b": (space.node_b, 1234)}, "biotech feasibility")
    hub.clock.advance(days=31)  # 2025-04-01
    _count(space, space.alice, {"node-a": (space.node_a, 60)}, "bleeds in april")
    return world


@pytest.fixture(scope="module")
def world_template(space_template: Space,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = _build(copy_space(space_template, tmp_path_factory.mktemp("billing_models")))
    yield world
    world.hub.close()


@pytest.fixture
def world(world_template: World, tmp_path: Path) -> Iterator[World]:
    copy = World(copy_space(world_template.space, tmp_path))
    copy.carol, copy.admin_p = world_template.carol, world_template.admin_p
    copy.models = dict(world_template.models)
    copy.hub.clock.advance(seconds=(world_template.hub.clock.now()
                                    - copy.hub.clock.now()).total_seconds())
    yield copy
    copy.hub.close()


# ---------------------------------------------------------------- reading pages




def _total(html: str, key: str) -> str:
    found = re.search(rf'data-total="{key}">([^<]+)<', html)
    assert found, (key, html[:3000])
    return found.group(1)


def _amount(text: str) -> Decimal:
    return Decimal(re.sub(r"[^\d.]", "", text))


def _api_statement(hub: Hub, who: Headers, query: str) -> Any:
    return hub.call("GET", f"/billing/statement?{query}", who)


ROLES = ["alice", "bob", "carol", "admin_a", "admin_b", "admin_p", "auditor", "operator"]


# ---------------------------------------------------------------- billing


@pytest.mark.parametrize("name", ROLES)
def test_statement_totals_equal_the_apis_for_each_viewer(world: World, name: str) -> None:
    who = world.who(name)
    api = world.hub.ok("GET", f"/billing/statement?period={MARCH}", who)
    page = sign_in(world.space, who).get(f"/console/billing?period={MARCH}")
    assert page.status_code == 200, page.text
    assert f'data-kind="{api["kind"]}" data-org="{api["org"]}"' in page.text
    totals = api["totals"]
    for key in ("invoiced", "platform_fee", "earned"):
        assert _amount(_total(page.text, key)) == Decimal(str(totals[key])), key
    assert _total(page.text, "studies") == str(totals["studies"])
    assert _total(page.text, "persons") == format_decimal(totals["persons"], locale="en_GB")
    rows = re.findall(r'<tr data-study="(\d+)" data-node="([^"]+)">', page.text)
    assert rows == [(str(ln["study_id"]), ln["node"]) for ln in api["lines"]]
    assert _total(page.text, "balanced") == "balanced"


def test_long_statements_show_their_lines_a_page_at_a_time(world: World, monkeypatch) -> None:
    from healthspace.hub.console.pages import billing

    monkeypatch.setattr(billing, "LINES_PER_PAGE", 2)
    who = world.hub.operator
    api = world.hub.ok("GET", f"/billing/statement?period={MARCH}", who)
    wanted = [(str(ln["study_id"]), ln["node"]) for ln in api["lines"]]
    assert len(wanted) > 2
    client = sign_in(world.space, who)
    seen = []
    pages = -(-len(wanted) // 2)
    for number in range(1, pages + 1):
        page = client.get(f"/console/billing?period={MARCH}&lines={number}").text
        seen += re.findall(r'<tr data-study="(\d+)" data-node="([^"]+)">', page)
        last = min(2 * number, len(wanted))
        assert f"Lines {2 * number - 1}–{last} of {len(wanted)}" in html.unescape(page)
        assert ('data-testid="lines-next"' in page) == (number < pages)
        assert ('data-testid="lines-prev"' in page) == (number > 1)
        assert _amount(_total(page, "invoiced")) == Decimal(str(api["totals"]["invoiced"]))
    assert seen == wanted  # every line once, in the API's order
    beyond = client.get(f"/console/billing?period={MARCH}&lines=999").text
    shown = re.findall(r'<tr data-study="(\d+)" data-node="([^"]+)">', beyond)
    assert shown == wanted[2 * (pages - 1):]  # the last page, whatever is asked beyond it
    assert client.get(f"/console/billing?period={MARCH}&lines=0").status_code == 422


def test_the_numbers_are_what_the_nodes_metered(world: World) -> None:
    """The invoice is not empty by accident: pharma's March lines are its three studies."""
    api = world.hub.ok("GET", f"/billing/statement?period={MARCH}", world.space.alice)
    assert api["totals"]["studies"] == 3 and api["totals"]["invoiced_cents"] > 0
    page = sign_in(world.space, world.space.alice).get(f"/console/billing?period={MARCH}")
    assert "bleeds in march" in page.text and "biotech feasibility" not in page.text
    assert "bleeds in april" not in page.text


def test_the_default_month_is_the_current_one_and_months_can_be_stepped(world: World) -> None:
    client = sign_in(world.space, world.space.alice)
    page = client.get("/console/billing")
    api = world.hub.ok("GET", f"/billing/statement?period={APRIL}", world.space.alice)
    assert 'value="2025-04"' in page.text and "April 2025" in page.text
    assert "bleeds in april" in page.text and "bleeds in march" not in page.text
    assert _amount(_total(page.text, "invoiced")) == Decimal(str(api["totals"]["invoiced"]))
    assert 'href="/console/billing?period=2025-03" rel="prev"' in page.text
    empty = client.get("/console/billing?period=2025-02")
    assert empty.status_code == 200 and "Nothing was settled in February 2025." in empty.text


def test_a_malformed_month_is_a_clear_422_not_a_500(world: World) -> None:
    client = sign_in(world.space, world.space.alice)
    page = client.get("/console/billing?period=2025-3")
    api = _api_statement(world.hub, world.space.alice, "period=2025-3")
    assert page.status_code == api.status_code == 422
    assert 'role="alert"' in page.text and "YYYY-MM" in page.text


@pytest.mark.parametrize(("name", "query"), [
    ("carol", "org=pharma"),  # another organisation's invoice
    ("alice", "org=biotech"),
    ("alice", "kind=earnings"),  # a consumer reads invoices only
    ("admin_a", "org=hosp-b"),  # another holder's earnings
    ("admin_a", "kind=invoice"),
])
def test_a_viewer_never_reads_a_statement_the_api_refuses(world: World, name: str,
                                                          query: str) -> None:
    who = world.who(name)
    api = _api_statement(world.hub, who, f"period={MARCH}&{query}")
    assert api.status_code == 403
    client = sign_in(world.space, who)
    page = client.get(f"/console/billing?period={MARCH}&{query}")
    assert page.status_code == 403 and 'role="alert"' in page.text
    assert 'data-testid="statement"' not in page.text and "<tr data-study=" not in page.text
    assert api.json()["detail"]["message"] in page.text.replace("&#39;", "'")
    for fmt in ("csv", "json"):
        download = client.get(f"/console/billing/statement.{fmt}?period={MARCH}&{query}")
        assert download.status_code == 403 and "data-study" not in download.text


def test_a_consumer_sees_no_organisation_picker_and_only_its_own_account(world: World) -> None:
    page = sign_in(world.space, world.space.alice).get(f"/console/billing?period={MARCH}")
    assert 'id="org"' not in page.text and 'name="deposit"' not in page.text
    assert re.findall(r'data-account="([^"]+)"', page.text) == ["pharma"]
    api = world.hub.ok("GET", "/billing/accounts/pharma", world.space.alice)
    assert api["updated_at"] is None and "not limited" in page.text
    holder = sign_in(world.space, world.space.admin_a).get(f"/console/billing?period={MARCH}")
    assert 'data-testid="accounts"' not in holder.text


@pytest.mark.parametrize("name", ["alice", "admin_b", "operator"])
def test_csv_and_json_downloads_are_the_apis_statement(world: World, name: str) -> None:
    who = world.who(name)
    api = world.hub.ok("GET", f"/billing/statement?period={MARCH}", who)
    client = sign_in(world.space, who)
    as_json = client.get(f"/console/billing/statement.json?period={MARCH}")
    assert as_json.status_code == 200 and as_json.json() == api
    assert as_json.headers["content-disposition"] == \
        f'attachment; filename="{api["org"]}-{MARCH}-{api["kind"]}.json"'
    as_csv = client.get(f"/console/billing/statement.csv?period={MARCH}")
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == len(api["lines"]) > 0
    for column, total in (("charge", "invoiced"), ("platform_fee", "platform_fee"),
                          ("earned", "earned")):
        assert sum(Decimal(r[column]) for r in rows) == Decimal(str(api["totals"][total]))
    assert [int(r["study_id"]) for r in rows] == [ln["study_id"] for ln in api["lines"]]
    assert sum(int(r["persons"]) for r in rows) == api["totals"]["persons"]
    other = client.get(f"/console/billing/statement.xml?period={MARCH}")
    assert other.status_code == 404 and "CSV or JSON" in other.text


def test_downloads_need_a_console_session(world: World) -> None:
    client = world.hub.client
    client.cookies.clear()
    response = client.get(f"/console/billing/statement.csv?period={MARCH}",
                          follow_redirects=False)
    assert response.status_code == 303 and "/console/sign-in" in response.headers["location"]
    bearer_only = client.get(f"/console/billing/statement.csv?period={MARCH}",
                             headers=world.space.alice, follow_redirects=False)
    assert bearer_only.status_code == 303  # an API token is no console session


def test_overseers_pick_any_organisation_and_kind(world: World) -> None:
    for who in (world.space.auditor, world.hub.operator):
        client = sign_in(world.space, who)
        for query in ("org=pharma", "org=hosp-a&kind=earnings", "org=biotech"):
            api = world.hub.ok("GET", f"/billing/statement?period={MARCH}&{query}", who)
            page = client.get(f"/console/billing?period={MARCH}&{query}")
            assert f'data-kind="{api["kind"]}" data-org="{api["org"]}"' in page.text
            assert _amount(_total(page.text, "invoiced")) == Decimal(
                str(api["totals"]["invoiced"]))
        platform = client.get(f"/console/billing?period={MARCH}")
        assert "Invoiced, by consumer" in platform.text
        accounts = re.findall(r'data-account="([^"]+)"', platform.text)
        assert accounts == ["pharma", "biotech"]


def test_the_operator_sets_an_account_through_the_form(world: World) -> None:
    hub = world.hub
    client = sign_in(world.space, hub.operator)
    page = client.get(f"/console/billing?period={MARCH}")
    csrf = _csrf(page.text)
    forged = client.post("/console/billing/accounts/pharma",
                         data={"csrf": "forged", "deposit": "500"})
    assert forged.status_code == 403
    bad = client.post("/console/billing/accounts/pharma",
                      data={"csrf": csrf, "deposit": "-5", "period": MARCH})
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    words = client.post("/console/billing/accounts/pharma",
                        data={"csrf": csrf, "deposit": "lots", "period": MARCH})
    assert words.status_code == 422 and "Amounts are numbers" in words.text
    nothing = client.post("/console/billing/accounts/pharma", data={"csrf": csrf})
    assert nothing.status_code == 422
    assert hub.ok("GET", "/billing/accounts/pharma", hub.operator)["updated_at"] is None
    done = client.post("/console/billing/accounts/pharma",
                       data={"csrf": csrf, "deposit": "20,000", "credit_limit": "500",
                             "period": MARCH}, follow_redirects=False)
    assert done.status_code == 303 and "done=account" in done.headers["location"]
    account = hub.ok("GET", "/billing/accounts/pharma", hub.operator)
    assert (account["prepaid"], account["credit_limit"]) == (20000.0, 500.0)
    entries = hub.ok("GET", "/audit/entries?limit=1000", hub.operator)
    assert [e["subject"] for e in entries if e["action"] == "billing.account"] == [
        "org:pharma"]
    mine = sign_in(world.space, world.space.alice).get("/console/billing")
    shown = re.search(r'data-available="pharma">([^<]+)<', mine.text)
    assert shown and _amount(shown.group(1)) == Decimal(str(account["available"]))


@pytest.mark.parametrize("name", ["alice", "auditor", "admin_a"])
def test_only_operators_may_change_accounts(world: World, name: str) -> None:
    client = sign_in(world.space, world.who(name))
    csrf = _csrf(client.get("/console/billing").text)
    refused = client.post("/console/billing/accounts/pharma",
                          data={"csrf": csrf, "deposit": "100"})
    assert refused.status_code == 403 and "This page is for" in refused.text
    api = world.hub.call("PUT", "/billing/accounts/pharma", world.who(name),
                         json={"deposit": 100})
    assert api.status_code == 403
    assert world.hub.ok("GET", "/billing/accounts/pharma",
                        world.hub.operator)["updated_at"] is None
    assert client.get("/console/billing/accounts/pharma").status_code == 403


def test_a_refused_account_forms_address_opened_again_is_the_billing_page(world: World) -> None:
    """A refused form is shown at the POST's address: opened by GET (the language switch
    posts it as ``next``, or a reload) it is the billing page again, not a 405."""
    client = sign_in(world.space, world.hub.operator)
    csrf = _csrf(client.get(f"/console/billing?period={MARCH}").text)
    words = client.post("/console/billing/accounts/pharma",
                        data={"csrf": csrf, "deposit": "lots", "period": MARCH})
    assert words.status_code == 422 and 'value="/console/billing/accounts/pharma"' in words.text
    again = client.get(f"/console/billing/accounts/pharma?period={MARCH}",
                       follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"] == f"/console/billing?period={MARCH}"
    switched = client.post("/console/language", data={
        "lang": "zh", "next": "/console/billing/accounts/pharma"})
    assert switched.status_code == 200 and 'lang="zh-Hans"' in switched.text
    assert 'data-testid="statement"' in switched.text and "账单" in switched.text
    assert world.hub.ok("GET", "/billing/accounts/pharma",
                        world.hub.operator)["updated_at"] is None


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("name", ROLES)
def test_the_model_list_is_the_apis_for_each_viewer(world: World, name: str) -> None:
    who = world.who(name)
    api = [m["id"] for m in world.hub.ok("GET", "/models", who)["models"]]
    page = sign_in(world.space, who).get("/console/models")
    assert page.status_code == 200
    assert [int(i) for i in re.findall(r'<tr data-model="(\d+)">', page.text)] == api
    expected = {"alice": 2, "bob": 2, "carol": 1, "admin_a": 3, "admin_b": 3, "admin_p": 0,
                "auditor": 3, "operator": 3}
    assert len(api) == expected[name]


def test_the_model_list_filters_by_name(world: World) -> None:
    who = world.hub.operator
    api = [m["id"] for m in world.hub.ok("GET", "/models?name=risk", who)["models"]]
    page = sign_in(world.space, who).get("/console/models?name=risk")
    assert [int(i) for i in re.findall(r'<tr data-model="(\d+)">', page.text)] == api
    assert len(api) == 2


def test_a_model_card_shows_the_registrys_figures(world: World) -> None:
    model_id = world.models["download"]
    api = world.hub.ok("GET", f"/models/{model_id}", world.space.bob)
    page = sign_in(world.space, world.space.bob).get(f"/console/models/{model_id}")
    assert page.status_code == 200
    html = page.text
    for key, value in api["metrics"].items():
        if isinstance(value, float):
            shown = re.search(rf'data-metric="{key}">.*?<td class="num">([^<]+)</td>', html)
            assert shown and shown.group(1) == format_decimal(value, "#,##0.0000",
                                                              locale="en_GB"), key
    for node, site in api["card"]["performance_by_site"].items():
        row = re.search(rf'<tr data-node="{node}">(.*?)</tr>', html, re.S)
        assert row and format_decimal(site["auc"], "#,##0.0000", locale="en_GB") in row.group(1)
        persons = api["contribution"][node]["persons"]
        assert f">{persons}<" in row.group(1)
    assert f'href="/console/studies/{api["study_id"]}"' in html
    assert (api["name"], api["version"], api["kind"], api["owner"]) == ("risk", 1, "logistic",
                                                                        "pharma")
    assert "Model risk v1" in html and ">pharma<" in html
    assert 'data-testid="release">download<' in html
    for feature in api["card"]["features"]:
        assert f'<th scope="row">{feature}</th>' in html
    assert 'data-testid="download"' in html  # bob's organisation trained it


@pytest.mark.parametrize(("name", "model", "status"), [
    ("carol", "download", 403), ("admin_p", "deploy", 403), ("alice", "biotech", 403),
    ("operator", "missing", 404),
])
def test_a_model_card_is_refused_where_the_api_refuses_it(world: World, name: str,
                                                          model: str, status: int) -> None:
    model_id = world.models.get(model, 999)
    who = world.who(name)
    assert world.hub.call("GET", f"/models/{model_id}", who).status_code == status
    page = sign_in(world.space, who).get(f"/console/models/{model_id}")
    assert page.status_code == status and 'role="alert"' in page.text


def _audit(hub: Hub, action: str, model_id: int) -> list[str]:
    entries = hub.ok("GET", "/audit/entries?limit=1000", hub.operator)
    return [e["actor"] for e in entries
            if e["action"] == action and e["subject"] == f"model:{model_id}"]


def test_weights_download_where_the_api_allows_it_and_is_audited(world: World) -> None:
    hub, model_id = world.hub, world.models["download"]
    client = sign_in(world.space, world.space.alice)
    response = client.get(f"/console/models/{model_id}/weights")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="risk-v1.json"'
    api = hub.ok("GET", f"/models/{model_id}/weights", world.space.bob)
    assert response.json() == api and "weights" in api
    assert _audit(hub, "model.download", model_id) == ["alice", "bob"]


@pytest.mark.parametrize(("name", "model"), [
    ("alice", "deploy"),  # her organisation's, but released to nodes only
    ("admin_a", "download"),  # may see the card, is not the training organisation
    ("operator", "download"),
    ("carol", "download"),  # may not even see it
])
def test_weights_are_refused_where_the_api_refuses_them(world: World, name: str,
                                                        model: str) -> None:
    hub, model_id, who = world.hub, world.models[model], world.who(name)
    client = sign_in(world.space, who)
    card = client.get(f"/console/models/{model_id}")
    assert 'data-testid="download"' not in card.text
    page = client.get(f"/console/models/{model_id}/weights")
    api = hub.call("GET", f"/models/{model_id}/weights", who)
    assert page.status_code == api.status_code == 403
    assert 'role="alert"' in page.text and '"weights"' not in page.text
    if name != "carol":  # a model it may not see is refused before the registry audits
        actor = {"operator": "operator", "admin_a": "admin-a"}.get(name, name)
        assert _audit(hub, "model.download_refused", model_id) == [actor, actor]
    assert _audit(hub, "model.download", model_id) == []


def test_a_model_card_lists_the_score_studies_the_viewer_may_see(world: World) -> None:
    hub, model_id = world.hub, world.models["deploy"]
    scored = hub.ok("POST", "/studies", world.space.bob, 201,
                    json={"analysis": "score", "params": {"model_id": model_id},
                          "nodes": ["node-a", "node-b"]})
    bob = sign_in(world.space, world.space.bob).get(f"/console/models/{model_id}")
    assert f'href="/console/studies/{scored["id"]}"' in bob.text
    alice = sign_in(world.space, world.space.alice).get(f"/console/models/{model_id}")
    assert f'href="/console/studies/{scored["id"]}"' not in alice.text  # bob's study
    assert "No score study of this model that you may see." in alice.text


# ---------------------------------------------------------------- Chinese


def _chinese(world: World, who: Headers) -> Any:
    client = sign_in(world.space, who)
    client.post("/console/language", data={"lang": "zh", "next": "/console/billing"})
    return client


def test_billing_in_chinese_with_localised_money_and_months(world: World) -> None:
    api = world.hub.ok("GET", f"/billing/statement?period={MARCH}", world.space.alice)
    english = sign_in(world.space, world.space.alice).get(f"/console/billing?period={MARCH}")
    invoiced = api["totals"]["invoiced"]
    assert _total(english.text, "invoiced") == format_currency(invoiced, "CNY", locale="en_GB")
    assert _total(english.text, "invoiced").startswith("CN¥")
    page = _chinese(world, world.space.alice).get(f"/console/billing?period={MARCH}")
    assert 'lang="zh-Hans"' in page.text
    assert "发票 · pharma · 2025年3月" in page.text and "开票金额" in page.text
    shown = _total(page.text, "invoiced")
    assert shown == format_currency(invoiced, "CNY", locale="zh_Hans_CN")
    assert shown.startswith("¥") and _amount(shown) == Decimal(str(invoiced))
    assert _total(page.text, "balanced") == "平衡"
    assert "2025年3月1日" in page.text  # settlement times in the Chinese date format
    assert "平台服务费（10%）" in page.text


def test_a_model_card_in_chinese(world: World) -> None:
    model_id = world.models["download"]
    api = world.hub.ok("GET", f"/models/{model_id}", world.space.alice)
    page = _chinese(world, world.space.alice).get(f"/console/models/{model_id}")
    assert "模型 risk 第 1 版" in page.text and "性能" in page.text and "可下载" in page.text
    assert "逻辑回归" in page.text and "下载模型包（JSON）" in page.text
    auc = format_decimal(api["metrics"]["auc"], "#,##0.0000", locale="zh_Hans_CN")
    assert re.search(rf'data-metric="auc">.*?>{re.escape(auc)}<', page.text)
    listing = _chinese(world, world.space.alice).get("/console/models")
    assert "模型库" in listing.text and "发布方式" in listing.text


def test_the_pages_load_their_own_stylesheet_under_the_csp(world: World) -> None:
    client = sign_in(world.space, world.space.alice)
    for path in ("/console/billing", "/console/models",
                 f"/console/models/{world.models['download']}"):
        page = client.get(path)
        assert 'href="/console/static/billing.css"' in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
    css = client.get("/console/static/billing.css")
    assert css.status_code == 200 and "period-picker" in css.text
    nav = client.get("/console/dashboard").text
    assert 'href="/console/models"' in nav and 'href="/console/billing"' in nav


def test_json_statement_is_byte_for_byte_the_apis_model(world: World) -> None:
    who = world.hub.operator
    api = world.hub.call("GET", f"/billing/statement?period={MARCH}", who)
    page = sign_in(world.space, who).get(f"/console/billing/statement.json?period={MARCH}")
    assert json.loads(page.text) == json.loads(api.text)
