"""The console's audit explorer and consent overview, in process: filters equal the ledger API,
inclusion proofs verify, tampering is caught by "verify now", node checkpoints are held to the
hub's record, consent counts are shown to their own organisation only, in both languages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hubkit import CC_PARTIAL, Headers, Space, execute_sql
from test_console import _csrf, sign_in

from healthspace.ledger.crosscheck import crosscheck, node_actor, task_subject
from healthspace.ledger.ledger import Ledger
from healthspace.ledger.sqla_store import SqlAlchemyLedgerStore
from healthspace.ledger.sqlite_store import SqliteLedgerStore


def run_task(space: Space, node: Headers, node_name: str, **spec: Any) -> dict[str, Any]:
    """A study on one node, run to the end: the hub records study.* and task.result."""
    hub = space.hub
    study = hub.submit(space.alice, nodes=[node_name], **spec)
    task = hub.next_task(node)
    assert task is not None
    hub.post(node, task["task_id"], status="completed", partial=CC_PARTIAL)
    return {"study": study["id"], "task": task["task_id"], "round": task["round"]}


def shown_seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'data-seq="(\d+)"', html)]


def api_entries(space: Space) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = space.hub.ok("GET", "/audit/entries?limit=1000",
                                                 space.auditor)
    return entries


def flush(space: Space) -> None:
    space.hub.client.app.state.hub.audit.flush()  # type: ignore[attr-defined]


@pytest.fixture
def busy(space: Space) -> Space:
    """Two studies an hour apart, on two nodes."""
    run_task(space, space.node_a, "node-a")
    space.hub.clock.advance(hours=1)
    run_task(space, space.node_b, "node-b")
    space.hub.clock.advance(hours=1)
    return space


def test_filters_return_exactly_the_entries_the_api_returns(busy: Space) -> None:
    client = sign_in(busy, busy.auditor)
    everything = api_entries(busy)
    seqs = [e["seq"] for e in everything]
    page = client.get("/console/audit?limit=1000")
    assert page.status_code == 200 and shown_seqs(page.text) == seqs
    # a seq range is the API's start/limit window
    window = busy.hub.ok("GET", "/audit/entries?start=3&limit=5", busy.auditor)
    assert shown_seqs(client.get("/console/audit?start=3&to=7").text) == \
        [e["seq"] for e in window]
    assert shown_seqs(client.get("/console/audit?start=3&limit=5").text) == \
        [e["seq"] for e in window]
    study_b = next(e["subject"] for e in everything
                   if e["action"] == "task.result" and e["actor"] == "node-b").split("/")[0]
    first = next(e["time"] for e in everything if e["actor"] == "node-b")
    cases = {
        "actor=node-a": lambda e: e["actor"] == "node-a",
        "action=study.*": lambda e: e["action"].startswith("study."),
        "action=task.result": lambda e: e["action"] == "task.result",
        f"subject={study_b}/*": lambda e: e["subject"].startswith(study_b + "/"),
        f"subject={study_b}": lambda e: e["subject"] == study_b,
        f"since={first[:16]}": lambda e: e["time"][:16] >= first[:16],
        f"until={first[:16]}": lambda e: e["time"][:16] <= first[:16],
        f"since={first[:16]}&action=study.*&start=2":
            lambda e: e["time"][:16] >= first[:16] and e["action"].startswith("study."),
    }
    for query, keep in cases.items():
        expected = [e["seq"] for e in everything if keep(e)]
        shown = shown_seqs(client.get(f"/console/audit?{query}&limit=1000").text)
        assert shown == expected and expected, query
    # paging over a filter: every match once, in order
    paged, link = [], "/console/audit?action=study.*&limit=3"
    while link:
        html = client.get(link).text
        paged += shown_seqs(html)
        found = re.search(r'href="([^"]+)" rel="next"', html)
        link = found.group(1).replace("&amp;", "&") if found else ""
    assert paged == [e["seq"] for e in everything if e["action"].startswith("study.")]


def test_a_bad_filter_is_a_clear_message_not_a_500(busy: Space) -> None:
    client = sign_in(busy, busy.auditor)
    for query, words in (("start=x", "whole number"), ("limit=5000", "between 1 and 1000"),
                         ("since=yesterday", "date and time")):
        page = client.get(f"/console/audit?{query}")
        assert page.status_code == 422 and 'role="alert"' in page.text and words in page.text


def test_an_entry_page_verifies_its_inclusion_proof(busy: Space) -> None:
    client = sign_in(busy, busy.auditor)
    entry = next(e for e in api_entries(busy) if e["action"] == "task.result")
    proof = busy.hub.ok("GET", f"/audit/proof/{entry['seq']}", busy.auditor)
    key = busy.hub.ok("GET", "/hub/key", busy.auditor)["public_key"]
    page = client.get(f"/console/audit/entries/{entry['seq']}")
    assert page.status_code == 200 and entry["hash"] in page.text
    assert re.search(r'id="check-proof" class="ok"', page.text)
    assert re.search(r'id="check-fields" class="ok"', page.text)
    assert f'id="cp-root">{proof["checkpoint"]["root"]}<' in page.text
    assert f'id="cp-key">{key}<' in page.text and "current key" in page.text
    for h in proof["path"]:
        assert h in page.text
    assert client.get("/console/audit/entries/99999").status_code == 404


def test_verify_now_reports_a_tampered_row(busy: Space) -> None:
    client = sign_in(busy, busy.auditor)
    html = client.get("/console/audit").text
    done = client.post("/console/audit/verify", data={"csrf": _csrf(html)})
    assert done.status_code == 200 and 'role="status"' in done.text and "FAILED" not in done.text
    count = len(api_entries(busy))
    assert re.search(rf"Entries checked</dt><dd>{count}<", done.text)
    assert client.post("/console/audit/verify", data={"csrf": "forged"}).status_code == 403
    # edit one stored entry directly in the hub database
    victim = next(e for e in api_entries(busy) if e["action"] == "task.result")
    execute_sql(busy.hub, "UPDATE ledger_entries SET actor = 'node-z' WHERE seq = :seq",
                {"seq": victim["seq"]})
    failed = client.post("/console/audit/verify", data={"csrf": _csrf(html)})
    assert failed.status_code == 200 and "FAILED" in failed.text and 'role="alert"' in failed.text
    assert f"entry {victim['seq']}: hash does not match its fields (edited)" in failed.text
    assert f'href="/console/audit/entries/{victim["seq"]}"' in failed.text
    assert 'class="bad-row"' in failed.text
    # the KPI route's check (the same function) agrees
    kpi = busy.hub.ok("GET", "/kpi?period=2025-03", busy.auditor)
    assert "hash does not match" in str(kpi)
    entry = client.get(f"/console/audit/entries/{victim['seq']}").text
    assert re.search(r'id="check-fields" class="bad"', entry) and "node-z" in entry
    assert re.search(r'id="check-proof" class="ok"', entry)  # the stored hash is still signed


def test_the_verify_reports_address_opened_again_is_the_explorer(busy: Space) -> None:
    """The report is a POST's page: its address opened by GET (the language switch posts it
    as ``next``, or a reload) lands on the explorer, not on a 405."""
    client = sign_in(busy, busy.auditor)
    html = client.post("/console/audit/verify", data={"csrf": _csrf(
        client.get("/console/audit").text)}).text
    again = client.get("/console/audit/verify", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/console/audit"
    switched = client.post("/console/language", data={"lang": "zh",
                                                      "next": "/console/audit/verify"})
    assert switched.status_code == 200 and 'lang="zh-Hans"' in switched.text
    assert "立即验证" in switched.text and 'name="csrf"' in html
    refused = sign_in(busy, busy.alice).get("/console/audit/verify", follow_redirects=False)
    assert refused.status_code == 403


def test_rows_edited_into_nonsense_are_shown_not_a_500(busy: Space) -> None:
    client = sign_in(busy, busy.auditor)
    execute_sql(busy.hub, "UPDATE ledger_entries SET time = 'yesterday' WHERE seq = 2")
    execute_sql(busy.hub, "UPDATE ledger_entries SET hash = 'not hex' WHERE seq = 3")
    listing = client.get("/console/audit?since=2025-03-01")
    assert listing.status_code == 200 and 2 not in shown_seqs(listing.text)
    assert "yesterday" in client.get("/console/audit").text
    entry = client.get("/console/audit/entries/3")
    assert entry.status_code == 200 and re.search(r'id="check-proof" class="bad"', entry.text)
    html = client.get("/console/audit").text
    failed = client.post("/console/audit/verify", data={"csrf": _csrf(html)})
    assert "entry 2: hash does not match its fields (edited)" in failed.text


def _node_ledger(path: Path, space: Space, name: str, runs: list[dict[str, Any]]) -> Ledger:
    ledger = Ledger(SqliteLedgerStore(path), owner=name, signing_key=space.hub.keys[name])
    for run in runs:
        ledger.append(node_actor(name), "task.run",
                      task_subject(run["study"], run["round"], run["task"]), {})
        ledger.checkpoint()
    return ledger


def _publish(space: Space, node: Headers, cp: Any) -> None:
    space.hub.ok("PUT", "/node/checkpoint", node,
                 json=space.hub.seal(node, "ledger.checkpoint", cp.to_dict()))


def test_node_checkpoints_are_held_to_the_executions_the_hub_recorded(space: Space,
                                                                      tmp_path: Path) -> None:
    runs = [run_task(space, space.node_a, "node-a") for _ in range(2)]
    ledger = _node_ledger(tmp_path / "a.sqlite", space, "node-a", runs)
    flush(space)
    hub_store = SqlAlchemyLedgerStore(space.hub.client.app.state.hub.engine)  # type: ignore
    assert crosscheck(hub_store.entries(), ledger.store.entries(), "node-a") == []
    cps = ledger.store.checkpoints()
    _publish(space, space.node_a, cps[-1])
    client = sign_in(space, space.auditor)
    page = client.get("/console/audit/nodes")
    assert page.status_code == 200
    row = page.text.split('id="node-node-a"')[1].split("</tr>")[0]
    assert "consistent" in row and cps[-1].root[:16] in row and cps[-1].key_id[:16] in row
    assert re.search(r'<td class="num">2</td>', row)  # latest size = executions = 2
    other = page.text.split('id="node-node-b"')[1].split("</tr>")[0]
    assert "nothing published" in other
    # the node republishes an older head: its ledger lost an execution
    _publish(space, space.node_a, cps[0])
    row = client.get("/console/audit/nodes").text.split('id="node-node-a"')[1].split("</tr>")[0]
    assert "size went down from 2 to 1" in row
    assert "had 1 entries, fewer than the 2 executions" in row
    # a rewritten history: another ledger of the same size, signed with the same key
    forked = _node_ledger(tmp_path / "fork.sqlite", space, "node-a", runs[::-1])
    _publish(space, space.node_a, forked.store.checkpoints()[-1])
    row = client.get("/console/audit/nodes").text.split('id="node-node-a"')[1].split("</tr>")[0]
    assert "two checkpoints at size 2 with different roots" in row


def test_audit_is_for_auditors_and_operators_consent_for_holders_and_operators(
        space: Space) -> None:
    for who in (space.alice, space.admin_a):
        client = sign_in(space, who)
        csrf = _csrf(client.get("/console/dashboard").text)
        for path in ("/console/audit", "/console/audit/entries/1", "/console/audit/nodes"):
            refused = client.get(path)
            assert refused.status_code == 403 and "This page is for" in refused.text, path
        assert client.post("/console/audit/verify", data={"csrf": csrf}).status_code == 403
        assert 'href="/console/audit"' not in client.get("/console/dashboard").text
    client = sign_in(space, space.auditor)
    assert client.get("/console/consent").status_code == 403
    assert 'href="/console/audit"' in client.get("/console/dashboard").text
    assert client.get("/console/audit").status_code == 200
    client = sign_in(space, space.hub.operator)
    assert client.get("/console/audit").status_code == 200
    assert client.get("/console/consent").status_code == 200


def _catalog(space: Space, node: Headers, tiers: dict[str, Any]) -> None:
    space.hub.ok("PUT", "/node/catalog", node, json=space.hub.seal(
        node, "catalog", {"tables": {"person": 1000}, "consent_tiers": tiers}))


def test_consent_shows_own_nodes_published_counts_and_their_changes(space: Space) -> None:
    _catalog(space, space.node_a, {"open": 120, "research_only": 40, "withheld": "<10"})
    space.hub.clock.advance(days=1)
    _catalog(space, space.node_a, {"open": 1130, "research_only": 40, "withheld": 10})
    space.hub.clock.advance(days=1)
    _catalog(space, space.node_a, {"open": 1130, "research_only": 40, "withheld": 10})
    _catalog(space, space.node_b, {"open": 70, "research_only": 0, "withheld": 20})
    published = {n["name"]: n["catalog"]["consent_tiers"]
                 for n in space.hub.ok("GET", "/nodes", space.admin_a)}
    client = sign_in(space, space.admin_a)
    page = client.get("/console/consent")
    assert page.status_code == 200
    assert 'id="consent-node-a"' in page.text and 'id="consent-node-b"' not in page.text
    current = page.text.split('id="consent-node-a"')[1].split("</table>")[0]
    for tier, value in published["node-a"].items():
        shown = f"{value:,}" if isinstance(value, int) else value.replace("<", "&lt;")
        assert f'data-tier="{tier}">{shown}<' in current
    history = page.text.split("Published counts when they changed")[1]
    assert history.count("<tr><th scope=\"row\">") == 2  # the third catalogue changed nothing
    assert "&lt;10" in history and "2 Mar 2025" in history
    client = sign_in(space, space.hub.operator)
    everything = client.get("/console/consent").text
    assert 'id="consent-node-a"' in everything and 'id="consent-node-b"' in everything
    assert "has not published consent counts" in everything  # node-payer


def test_audit_and_consent_pages_in_chinese(busy: Space) -> None:
    client = sign_in(busy, busy.auditor)
    page = client.get("/console/audit?lang=zh")
    assert page.status_code == 200 and 'lang="zh-Hans"' in page.text
    assert "审计" in page.text and "立即验证" in page.text and "执行者" in page.text
    html = client.get("/console/audit?lang=zh&start=x").text
    assert "起始序号必须是整数" in html
    done = client.post("/console/audit/verify?lang=zh", data={"csrf": _csrf(page.text)})
    assert "已验证" in done.text
    assert "节点账本" in client.get("/console/audit/nodes?lang=zh").text
    assert "包含证明" in client.get("/console/audit/entries/1?lang=zh").text
    _catalog(busy, busy.node_a, {"open": 1230, "research_only": 40, "withheld": "<10"})
    client = sign_in(busy, busy.admin_a)
    consent = client.get("/console/consent?lang=zh").text
    assert "同意" in consent and "仅限科研" in consent and "1,230" in consent
