"""The web console in process: sign-in, sessions, CSRF, the security headers, role checks,
approvals through a form, and both languages."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

import pytest
from hubkit import Space

from healthspace.hub import console
from healthspace.hub.console.i18n import catalog

CONSOLE = Path(console.__file__).parent


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@pytest.fixture
def space(space):
    """node-a needs a data steward's approval (L2)."""
    space.hub.publish_policy(space.node_a, {"level": "L2", "version": 2})
    return space


def sign_in(space: Space, headers: dict[str, str]):
    client = space.hub.client
    client.cookies.clear()
    form = client.get("/console/sign-in")
    assert form.status_code == 200
    done = client.post("/console/sign-in", data={
        "form_token": _form_token(form.text), "method": "token", "token": _token(headers),
        "next": "/console/dashboard"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/console/dashboard"
    return client


def test_pages_need_a_session_and_redirect_to_sign_in(space):
    client = space.hub.client
    page = client.get("/console/studies?status=running", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/sign-in?next=/console/studies%3Fstatus%3Drunning" \
        or page.headers["location"].startswith("/console/sign-in?next=/console/studies")


def test_token_sign_in_sets_a_strict_http_only_cookie_and_shows_the_dashboard(space):
    client = space.hub.client
    form = client.get("/console/sign-in")
    done = client.post("/console/sign-in", data={
        "form_token": _form_token(form.text), "method": "token",
        "token": _token(space.alice), "next": "/console/dashboard"}, follow_redirects=False)
    cookie = done.headers["set-cookie"]
    assert "hs_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    dashboard = client.get("/console/dashboard")
    assert dashboard.status_code == 200 and "alice" in dashboard.text
    assert "Recent studies" in dashboard.text


def test_bad_credentials_and_a_missing_form_token_are_refused(space):
    client = space.hub.client
    form = client.get("/console/sign-in")
    wrong = client.post("/console/sign-in", data={
        "form_token": _form_token(form.text), "method": "token", "token": "hs_nope"})
    assert wrong.status_code == 401 and "Sign-in failed" in wrong.text
    client.cookies.clear()
    forged = client.post("/console/sign-in", data={
        "form_token": "made-up", "method": "token", "token": _token(space.alice)})
    assert forged.status_code == 401 and "expired" in forged.text
    node_token = _token(space.node_a)
    form = client.get("/console/sign-in")
    as_node = client.post("/console/sign-in", data={
        "form_token": _form_token(form.text), "method": "token", "token": node_token})
    assert as_node.status_code == 401  # nodes have no console


def test_password_sign_in_after_setting_one_through_the_api(space):
    hub = space.hub
    hub.ok("PUT", "/me/password", space.admin_a, 204,
           json={"password": "correct horse battery"})
    short = hub.call("PUT", "/me/password", space.admin_a, json={"password": "short"})
    assert short.status_code == 422
    other = hub.call("PUT", "/me/password", space.alice,
                     json={"password": "another long one", "user": "admin-a"})
    assert other.status_code == 403
    client = hub.client
    form = client.get("/console/sign-in")
    bad = client.post("/console/sign-in", data={
        "form_token": _form_token(form.text), "method": "password", "name": "admin-a",
        "password": "wrong horse battery"})
    assert bad.status_code == 401
    good = client.post("/console/sign-in", data={
        "form_token": _form_token(bad.text), "method": "password", "name": "admin-a",
        "password": "correct horse battery"}, follow_redirects=False)
    assert good.status_code == 303
    assert "admin-a" in client.get("/console/dashboard").text


def test_every_console_response_carries_a_strict_csp(space):
    client = sign_in(space, space.alice)
    for path in ("/console/sign-in", "/console/dashboard", "/console/static/console.css"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["x-frame-options"] == "DENY"


def test_templates_have_no_inline_script_style_or_handlers():
    for path in (CONSOLE / "templates").glob("*.html"):
        text = path.read_text()
        assert "<script>" not in text and "<style" not in text, path.name
        assert not re.search(r"\son[a-z]+=", text), path.name  # onclick= etc.
        assert "style=" not in text, path.name


def test_each_role_is_refused_the_pages_of_others(space):
    client = sign_in(space, space.alice)  # a consumer
    refused = client.get("/console/approvals")
    assert refused.status_code == 403 and "This page is for" in refused.text
    assert client.get("/console/catalog").status_code == 200
    client = sign_in(space, space.admin_a)
    assert client.get("/console/approvals").status_code == 200


def test_forms_without_the_session_csrf_token_are_refused(space):
    client = sign_in(space, space.admin_a)
    study = space.hub.submit(space.alice, nodes=["node-a"])
    assert study["status"] == "awaiting_approval"
    forged = client.post(f"/console/approvals/{study['id']}/node-a/approve",
                         data={"csrf": "forged"})
    assert forged.status_code == 403
    assert space.hub.study(space.alice, study["id"])["status"] == "awaiting_approval"


def test_a_data_holder_approves_through_the_inbox(space):
    study = space.hub.submit(space.alice, nodes=["node-a"])
    client = sign_in(space, space.admin_a)
    inbox = client.get("/console/approvals")
    assert f"study-{study['id']}-node-a" in inbox.text
    done = client.post(f"/console/approvals/{study['id']}/node-a/approve",
                       data={"csrf": _csrf(inbox.text), "comment": "fine"},
                       follow_redirects=False)
    assert done.status_code == 303
    assert space.hub.study(space.alice, study["id"])["status"] == "running"
    # the other hospital's admin cannot decide for node-a
    other = space.hub.submit(space.alice, nodes=["node-a"])
    client = sign_in(space, space.admin_b)
    page = client.get("/console/approvals")
    assert f"study-{other['id']}-node-a" not in page.text
    denied = client.post(f"/console/approvals/{other['id']}/node-a/approve",
                         data={"csrf": _csrf(page.text)})
    assert denied.status_code == 422 and "alert" in denied.text


def test_a_rejection_needs_a_comment(space):
    study = space.hub.submit(space.alice, nodes=["node-a"])
    client = sign_in(space, space.admin_a)
    csrf = _csrf(client.get("/console/approvals").text)
    empty = client.post(f"/console/approvals/{study['id']}/node-a/reject",
                        data={"csrf": csrf, "comment": " "})
    assert empty.status_code == 422 and "needs a comment" in empty.text
    client.post(f"/console/approvals/{study['id']}/node-a/reject",
                data={"csrf": csrf, "comment": "cohort too broad"})
    view = space.hub.study(space.alice, study["id"])
    assert view["status"] == "rejected" and "cohort too broad" in (view["error"] or "")


def test_study_detail_shows_the_timeline_and_is_scoped(space):
    study = space.hub.submit(space.alice, nodes=["node-a"])
    client = sign_in(space, space.alice)
    page = client.get(f"/console/studies/{study['id']}")
    assert page.status_code == 200 and "submitted" in page.text and "node-a" in page.text
    client = sign_in(space, space.bob)  # same organisation, not the submitter
    assert client.get(f"/console/studies/{study['id']}").status_code == 403


def test_sign_out_ends_the_session(space):
    client = sign_in(space, space.alice)
    csrf = _csrf(client.get("/console/dashboard").text)
    cookie = client.cookies.get("hs_console")
    client.post("/console/sign-out", data={"csrf": csrf})
    client.cookies.set("hs_console", cookie, path="/console")
    assert client.get("/console/dashboard", follow_redirects=False).status_code == 303


def test_switching_to_chinese_translates_pages_and_localises_numbers(space):
    client = sign_in(space, space.auditor)
    done = client.post("/console/language", data={"lang": "zh", "next": "/console/dashboard"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/console/dashboard"
    page = client.get("/console/dashboard")
    assert "仪表盘" in page.text and "最近的研究" in page.text and 'lang="zh-Hans"' in page.text
    assert "审计账本" in page.text  # the auditor's KPI tiles
    # an open redirect is refused
    away = client.post("/console/language", data={"lang": "en", "next": "https://evil.test/"},
                       follow_redirects=False)
    assert away.headers["location"] == "/console/dashboard"


def test_the_language_switch_comes_back_to_the_page_with_its_filters(space):
    client = sign_in(space, space.auditor)
    page = client.get("/console/studies", params={"status": "completed", "lang": "en"})
    back = re.search(r'<input type="hidden" name="next" value="([^"]+)">', page.text).group(1)
    assert html.unescape(back) == "/console/studies?status=completed"  # not ?lang=: it wins
    done = client.post("/console/language", data={"lang": "zh", "next": html.unescape(back)},
                       follow_redirects=False)
    assert done.headers["location"] == "/console/studies?status=completed"
    assert 'lang="zh-Hans"' in client.get(done.headers["location"]).text


def _strings() -> set[str]:
    """Every translatable literal: ``_("…")`` in templates, ``t("…")`` in console code."""
    found: set[str] = set()
    for path in (CONSOLE / "templates").glob("*.html"):
        found |= set(re.findall(r'_\(\s*"([^"]+)"\s*[,)]', path.read_text()))
        found |= set(re.findall(r"_\(\s*'([^']+)'\s*[,)]", path.read_text()))
    for path in CONSOLE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0],
                                                                      ast.Constant):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("t", "_") and isinstance(node.args[0].value, str):
                    found.add(node.args[0].value)
    return found


def test_every_string_has_a_chinese_translation():
    missing = sorted(_strings() - set(catalog("zh")))
    assert not missing, missing


@pytest.mark.parametrize("value", ["research", "awaiting_approval", "data_holder_admin",
                                   "needs_approval", "two_level", "payer"])
def test_enumerated_values_are_translated(value):
    assert value in catalog("zh")


def test_catalog_files_never_translate_one_string_two_ways():
    """Every locale/zh/*.po file is merged into one catalog: a string two files translate
    differently would depend on file order."""
    from babel.messages.pofile import read_po

    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for path in sorted((CONSOLE / "locale" / "zh").glob("*.po")):
        with open(path, "rb") as handle:
            for message in read_po(handle):
                if not message.id or not message.string:
                    continue
                first = seen.setdefault(str(message.id), (path.name, str(message.string)))
                if first[1] != message.string:
                    clashes.append((message.id, first, (path.name, message.string)))
    assert not clashes, clashes
