"""Fuzzing the hub's HTTP API with schemathesis, as every role and as nobody.

A real hub process (uvicorn on loopback, its own SQLite file) is seeded through its own API
with organisations, users of every role, two nodes with published catalogues and policies and
studies in several states, so generated path parameters reach existing objects as well as
missing ones. Then every operation of ``/openapi.json`` is called with schemathesis-generated
requests (valid and invalid) under each role's token. The contract checked on every answer:

- never a 5xx;
- every 4xx is the hub's error body: ``{"detail": {"message": <non-empty str>, "field": …}}``;
  a 422 names the field; a 401 carries ``WWW-Authenticate``.

The run is derandomised and bounded (``HEALTHSPACE_FUZZ_EXAMPLES`` examples per operation and
role, default 8) so it is reproducible and fits in ``make test``; raise the variable for a
long run, e.g. ``HEALTHSPACE_FUZZ_EXAMPLES=200 pytest tests/integration/test_fuzz.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from nacl.signing import SigningKey
from schemathesis.checks import not_a_server_error

from healthspace.core.enums import PrincipalKind, Role
from healthspace.core.envelope import seal
from healthspace.hub.app import api_permissions
from healthspace.launch import LocalFederation

EXAMPLES = int(os.environ.get("HEALTHSPACE_FUZZ_EXAMPLES", "8"))
REFUSED_EXAMPLES = max(2, EXAMPLES // 4)
# Fuzzed in this order: the operator last, so what it changes (new users, tokens, accounts)
# cannot starve the other roles' runs of their seeded objects.
ROLES = ["anonymous", "node", "consumer", "steward", "auditor", "operator"]
USER_ROLES = {"consumer": Role.CONSUMER, "steward": Role.DATA_HOLDER_ADMIN,
              "auditor": Role.AUDITOR, "operator": Role.OPERATOR}
# Each operation is fuzzed in depth (schema examples, schemathesis' coverage phase: boundary
# values, missing and malformed parameters, unexpected methods; then generated cases) by the
# first role here allowed to call it, with generated cases by every other allowed role, and
# with a few cases by each role it refuses (their answer must still be a proper 401/403).
DEPTH_ORDER = ["anonymous", "consumer", "steward", "node", "auditor", "operator"]
PERMISSIONS = api_permissions()
COHORT = {"entry": {"condition": {"codes": ["ICD10:K92%"]}}}
AUTO_POLICY = {"level": "L1"}
APPROVAL_POLICY = {"level": "L2", "approval_mode": "single"}
# Long-polls are capped so a generated ``wait=59`` cannot stall the run; the parameter's
# validation (negative, too large, not a number) is still fuzzed.
MAX_FUZZ_WAIT = 0.2


@dataclass
class SeededHub:
    """The hub under fuzz: its URL, one token per role, the logs of its process."""

    fed: LocalFederation
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.fed.url

    def headers(self, role: str) -> dict[str, str]:
        token = self.tokens.get(role)
        return {"Authorization": f"Bearer {token}"} if token else {}


class _Seeder:
    """Populates the hub through its API, acting as the operator, users and nodes."""

    def __init__(self, url: str, operator_token: str) -> None:
        self.http = httpx.Client(base_url=url + "/api/v1", timeout=30.0)
        self.operator = self._bearer(operator_token)
        self.node_ids: dict[str, int] = {}
        self.keys: dict[str, SigningKey] = {}
        self.node_headers: dict[str, dict[str, str]] = {}

    @staticmethod
    def _bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def ok(self, method: str, path: str, headers: dict[str, str], expect: int = 200,
           **kw: Any) -> Any:
        response = self.http.request(method, path, headers=headers, **kw)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def org(self, name: str, kind: str) -> None:
        self.ok("POST", "/orgs", self.operator, 201, json={"name": name, "kind": kind})

    def user(self, name: str, org: str, role: str) -> str:
        self.ok("POST", "/users", self.operator, 201,
                json={"name": name, "org": org, "role": role})
        token: str = self.ok("POST", "/tokens", self.operator, 201, json={"user": name})["token"]
        return token

    def sealed(self, node: str, kind: str, payload: dict[str, Any], **ids: Any) -> Any:
        envelope = seal(kind, payload, self.keys[node], node_id=self.node_ids[node], **ids)
        return envelope.model_dump(mode="json")

    def node(self, name: str, org: str, policy: dict[str, Any]) -> str:
        """Enrol a node with a fresh key and publish its signed catalogue and policy."""
        key = SigningKey.generate()
        body = {"name": name, "org": org, "public_key": key.verify_key.encode().hex()}
        enrolled = self.ok("POST", "/nodes", self.operator, 201, json=body)
        self.node_ids[name], self.keys[name] = enrolled["id"], key
        headers = self.node_headers[name] = self._bearer(enrolled["token"])
        catalog = self.sealed(name, "catalog", {"tables": {"person": 1000}})
        self.ok("PUT", "/node/catalog", headers, json=catalog)
        self.ok("PUT", "/node/policy", headers,
                json=self.sealed(name, "policy", {"policy": policy}))
        token: str = enrolled["token"]
        return token

    def submit(self, consumer: dict[str, str], node: str, title: str) -> int:
        spec = {"analysis": "cohort_count", "cohort": COHORT, "nodes": [node], "title": title}
        study_id: int = self.ok("POST", "/studies", consumer, 201, json=spec)["id"]
        return study_id

    def take_task(self, node: str) -> dict[str, Any]:
        task: dict[str, Any] = self.ok("GET", "/node/tasks/next", self.node_headers[node])
        return task

    def complete(self, node: str, task: dict[str, Any]) -> None:
        result = {"status": "completed",
                  "partial": {"count": 42, "min_cell_size": 10, "breakdown": None}}
        envelope = self.sealed(node, "task.result", result, study_id=task["study_id"],
                               round=task["round"])
        self.ok("POST", f"/node/tasks/{task['task_id']}/result", self.node_headers[node],
                json=envelope)


def seed(hub: SeededHub) -> None:
    """Every kind of object the API serves, in the states a study goes through."""
    s = _Seeder(hub.url, hub.fed.operator_token)
    for name, kind in [("hosp-a", "hospital"), ("hosp-b", "hospital"),
                       ("pharma", "consumer"), ("regulator", "operator")]:
        s.org(name, kind)
    hub.tokens["operator"] = hub.fed.operator_token
    hub.tokens["node"] = s.node("node-a", "hosp-a", AUTO_POLICY)
    s.node("node-b", "hosp-b", APPROVAL_POLICY)
    hub.tokens["consumer"] = s.user("alice", "pharma", "consumer")
    hub.tokens["steward"] = s.user("steward-b", "hosp-b", "data_holder_admin")
    hub.tokens["auditor"] = s.user("audrey", "regulator", "auditor")
    consumer, steward = s._bearer(hub.tokens["consumer"]), s._bearer(hub.tokens["steward"])

    done = s.submit(consumer, "node-a", "completed study")
    s.complete("node-a", s.take_task("node-a"))
    s.ok("POST", f"/studies/{done}/feedback", consumer, 201, json={"rating": 4})
    s.submit(consumer, "node-a", "running study")
    s.take_task("node-a")
    cancelled = s.submit(consumer, "node-a", "cancelled study")
    s.ok("POST", f"/studies/{cancelled}/cancel", consumer)
    s.submit(consumer, "node-b", "awaiting approval")
    approved = s.submit(consumer, "node-b", "approved study")
    s.ok("POST", f"/approvals/{approved}/node-b/approve", steward, json={"comment": "ok"})
    rejected = s.submit(consumer, "node-b", "rejected study")
    s.ok("POST", f"/approvals/{rejected}/node-b/reject", steward, json={"comment": "no"})
    s.ok("PUT", "/billing/accounts/pharma", s.operator, json={"deposit": "1000"})
    s.http.close()


@pytest.fixture(scope="module")
def fuzzed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededHub]:
    """A hub process of its own (own SQLite file, own port): fuzzing cannot touch other
    tests' hubs."""
    fed = LocalFederation(tmp_path_factory.mktemp("fuzz"))
    fed.init_hub()
    fed.start_hub()
    try:
        hub = SeededHub(fed=fed)
        seed(hub)
        yield hub
    finally:
        fed.close()


def allowed(role: str, method: str, path: str) -> bool:
    """Whether ``role`` may call the operation, as the routes declare (outside /api/v1: all)."""
    if (method, path) not in PERMISSIONS:
        return True
    permission = PERMISSIONS[(method, path)]
    if permission is None or role == "anonymous":
        return permission is None
    if role == "node":
        return permission.allows(PrincipalKind.NODE, None)
    return permission.allows(PrincipalKind.USER, USER_ROLES[role])


def part_of(role: str, method: str, path: str) -> str:
    """How ``role`` fuzzes the operation: "deep", "wide" or "refused"."""
    if not allowed(role, method, path):
        return "refused"
    first = next(r for r in DEPTH_ORDER if allowed(r, method, path))
    return "deep" if first == role else "wide"


def _targets() -> list[tuple[str, str]]:
    """(role, part) pairs with at least one operation ("GET /healthz" stands for the routes
    outside /api/v1, open to all)."""
    routes = [*PERMISSIONS, ("GET", "/healthz")]
    return [(role, part) for role in ROLES for part in ("deep", "wide", "refused")
            if any(part_of(role, method, path) == part for method, path in routes)]


@pytest.fixture(scope="module", params=_targets(), ids=lambda t: f"{t[0]}-{t[1]}")
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Whose token the fuzzed requests carry ("anonymous": none) and which part it fuzzes."""
    role, part = request.param
    return str(role), str(part)


@pytest.fixture(scope="module")
def openapi(fuzzed_hub: SeededHub) -> dict[str, Any]:
    """The hub's OpenAPI document, as it serves it."""
    document: dict[str, Any] = httpx.get(f"{fuzzed_hub.url}/openapi.json", timeout=30).json()
    return document


@pytest.fixture(scope="module")
def hub_schema(fuzzed_hub: SeededHub, openapi: dict[str, Any], target: tuple[str, str]) -> Any:
    """The hub's API narrowed to the operations ``target`` fuzzes; schemathesis runs each of
    them as a subtest."""
    role, part = target
    paths = {path: {method: op for method, op in item.items()
                    if part_of(role, method.upper(), path) == part}
             for path, item in openapi["paths"].items()}
    document = {**openapi, "paths": {path: item for path, item in paths.items() if item}}
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=fuzzed_hub.url)
    schema.config.phases.examples.enabled = part == "deep"
    schema.config.phases.coverage.enabled = part == "deep"
    schema.config.generation.update(
        max_examples=REFUSED_EXAMPLES if part == "refused" else EXAMPLES)
    return schema


schema = schemathesis.pytest.from_fixture("hub_schema")


def _cap_waits(case: Any) -> None:
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > MAX_FUZZ_WAIT:
        case.query["wait"] = MAX_FUZZ_WAIT


def check_error_body(response: Any) -> None:
    """The hub's error contract for one 4xx response."""
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"{where}: not JSON: {response.text[:300]!r}") from exc
    detail = body.get("detail") if isinstance(body, dict) else None
    assert isinstance(detail, dict), f"{where}: no detail object: {response.text[:300]}"
    message = detail.get("message")
    assert isinstance(message, str) and message.strip(), f"{where}: no message: {body}"
    if response.status_code == 422:
        assert isinstance(detail.get("field"), str) and detail["field"], (
            f"{where}: a validation error must name its field: {body}")
    if response.status_code == 401:
        # schemathesis keeps headers as lower-cased names -> lists of values
        assert response.headers.get("www-authenticate"), f"{where}: 401 without WWW-Authenticate"


@pytest.mark.slow
@pytest.mark.xdist_group("fuzz")
@schema.parametrize()
@settings(derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate, Phase.shrink])
def test_api_fuzz(case: Any, target: tuple[str, str], fuzzed_hub: SeededHub) -> None:
    _cap_waits(case)
    response = case.call(headers=fuzzed_hub.headers(target[0]), timeout=15)
    try:
        case.validate_response(response, checks=[not_a_server_error])
    except Exception as exc:  # the server's traceback is in its log
        raise AssertionError(f"{exc}\nhub log:\n{fuzzed_hub.fed.log_tail('hub.log', 40)}") from exc
    if 400 <= response.status_code < 500:
        check_error_body(response)


# --- the web console: HTML forms behind a session cookie and a CSRF token, outside the
# OpenAPI document; garbage in every form field and path parameter must not crash a page.

GARBAGE = ["", " ", "0", "-1", "1e999", "nan", "inf", "-inf", str(2**64), "1" * 400,
           "\x00", "' OR 1=1 --", "<script>x</script>", "中文", "%s%n", "{}", "[]", "null"]
HUGE_IDS = [0, 2**31, 2**63, 2**64, 10**40]


def _console_client(hub: SeededHub, role: str) -> tuple[httpx.Client, str]:
    """A browser-like client signed in to the console with ``role``'s token, and the CSRF
    token its forms carry."""
    client = httpx.Client(base_url=hub.url, timeout=30.0)
    form = client.get("/console/sign-in")
    form_token = re.search(r'name="form_token" value="([^"]+)"', form.text)
    assert form_token, form.text[:500]
    signed = client.post("/console/sign-in", data={
        "form_token": form_token[1], "method": "token", "token": hub.tokens[role]})
    assert signed.status_code == 303, signed.text[:500]
    page = client.get("/console/studies/new")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    return client, csrf[1]


class _Console:
    """Sends console requests, noting every one the hub answers with a 5xx or drops."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.failures: list[str] = []

    def send(self, method: str, path: str, **kw: Any) -> None:
        try:
            response = self._request(method, path, **kw)
        except httpx.TransportError as exc:
            self.failures.append(f"{method} {path} {kw}: {exc!r}")
            return
        if response.status_code >= 500:
            self.failures.append(f"{method} {response.request.url} {kw} "
                                 f"-> {response.status_code}")

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        # After a crash the server drops the kept-alive connection: one retry on a fresh
        # connection, so the next request is judged on its own answer.
        try:
            return self.client.request(method, path, **kw)
        except httpx.TransportError:
            return self.client.request(method, path, **kw)


@contextmanager
def _console_as(hub: SeededHub, role: str) -> Iterator[tuple[_Console, str]]:
    """A signed-in console session and its CSRF token; no request it sent may have failed."""
    client, csrf = _console_client(hub, role)
    console = _Console(client)
    try:
        yield console, csrf
    finally:
        client.close()
    assert not console.failures, "\n".join(console.failures)


@pytest.mark.slow
@pytest.mark.xdist_group("fuzz")
def test_console_forms_survive_garbage(fuzzed_hub: SeededHub) -> None:
    with _console_as(fuzzed_hub, "operator") as (console, csrf):
        for value in GARBAGE:
            for path, fields in [
                ("/console/approvals/4/node-b/approve", ["step", "comment", "ethics_ref"]),
                ("/console/approvals/4/node-b/reject", ["comment"]),
                ("/console/billing/accounts/pharma", ["deposit", "credit_limit", "period"]),
                (f"/console/billing/accounts/{quote(value, safe='')}", ["deposit"]),
                ("/console/studies/new", ["analysis", "cohort", "purpose", "action", "title",
                                          "min_age", "max_age", "codes", "nodes"]),
                ("/console/audit/verify", []),
                ("/console/language", ["lang", "next"]),
            ]:
                console.send("POST", path, data={"csrf": csrf, **{f: value for f in fields}})
            console.send("POST", "/console/studies/new", content=value.encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            console.send("GET", "/console/audit", params={"actor": value})
        for big in HUGE_IDS:
            for path in ["/console/studies/{}", "/console/models/{}",
                         "/console/studies/new/preview/{}", "/console/studies/{}/result.json"]:
                console.send("GET", path.format(big))
            for action in ["approve", "reject"]:
                console.send("POST", f"/console/approvals/{big}/node-b/{action}",
                             data={"csrf": csrf, "comment": "x"})


@pytest.mark.slow
@pytest.mark.xdist_group("fuzz")
def test_console_audit_pages_survive_huge_numbers(fuzzed_hub: SeededHub) -> None:
    with _console_as(fuzzed_hub, "operator") as (console, _csrf):
        for big in HUGE_IDS:
            console.send("GET", f"/console/audit/entries/{big}")
            console.send("GET", "/console/audit", params={"start": str(big)})
