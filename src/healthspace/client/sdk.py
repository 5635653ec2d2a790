"""HubClient: the Python API behind the CLI for consumers, operators and nodes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from healthspace.client.http import Http
from healthspace.core.enums import StudyStatus
from healthspace.core.envelope import Envelope
from healthspace.core.metering import AccountView, MeterList, Statement
from healthspace.core.models import (
    Feedback,
    Me,
    NodeEnrolled,
    NodeView,
    OrgView,
    StudySpec,
    StudyView,
    TaskAck,
    TaskAssignment,
    TokenView,
    UserView,
)
from healthspace.core.registry_defs import (
    RegistryList,
    RegistryReportAck,
    RegistrySpec,
    RegistryView,
)
from healthspace.core.registry_models import ModelList, ModelPackage, ModelView, StudyProgress
from healthspace.governance.engine import Decision

API = "/api/v1"


class HubClient:
    """Typed access to the hub API; every call raises a HealthspaceError subclass on failure."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.http = Http(url, token, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- identity and administration ------------------------------------------------

    def me(self) -> Me:
        return Me.model_validate(self.http.request("GET", f"{API}/me").json())

    def add_org(self, name: str, kind: str, display_name: str | None = None) -> OrgView:
        body = {"name": name, "kind": kind, "display_name": display_name}
        return OrgView.model_validate(self.http.request("POST", f"{API}/orgs", json=body).json())

    def list_orgs(self) -> list[OrgView]:
        return [OrgView.model_validate(o) for o in self.http.request("GET", f"{API}/orgs").json()]

    def add_user(self, name: str, org: str, role: str) -> UserView:
        body = {"name": name, "org": org, "role": role}
        return UserView.model_validate(self.http.request("POST", f"{API}/users", json=body).json())

    def list_users(self) -> list[UserView]:
        return [UserView.model_validate(u) for u in self.http.request("GET", f"{API}/users").json()]

    def set_password(self, password: str, user: str | None = None) -> None:
        """Your console password (an operator may set another user's)."""
        self.http.request("PUT", f"{API}/me/password",
                          json={"password": password, "user": user})

    def issue_token(self, user: str, label: str | None = None) -> TokenView:
        body = {"user": user, "label": label}
        return TokenView.model_validate(
            self.http.request("POST", f"{API}/tokens", json=body).json()
        )

    def enroll_node(self, name: str, org: str, public_key: str | None = None) -> NodeEnrolled:
        body = {"name": name, "org": org, "public_key": public_key}
        return NodeEnrolled.model_validate(
            self.http.request("POST", f"{API}/nodes", json=body).json()
        )

    def list_nodes(self) -> list[NodeView]:
        return [NodeView.model_validate(n) for n in self.http.request("GET", f"{API}/nodes").json()]

    # --- studies --------------------------------------------------------------------

    def submit(self, spec: StudySpec | dict[str, Any]) -> StudyView:
        body = spec.model_dump(mode="json") if isinstance(spec, StudySpec) else spec
        return StudyView.model_validate(
            self.http.request("POST", f"{API}/studies", json=body).json()
        )

    def study(self, study_id: int, wait: float = 0) -> StudyView:
        params = {"wait": wait} if wait else None
        response = self.http.request(
            "GET", f"{API}/studies/{study_id}", params=params, timeout=wait + 30
        )
        return StudyView.model_validate(response.json())

    def studies(self, status: str | None = None) -> list[StudyView]:
        params = {"status": status} if status else None
        data = self.http.request("GET", f"{API}/studies", params=params).json()
        items = data["studies"] if isinstance(data, dict) else data
        return [StudyView.model_validate(s) for s in items]

    def cancel(self, study_id: int) -> StudyView:
        return StudyView.model_validate(
            self.http.request("POST", f"{API}/studies/{study_id}/cancel").json()
        )

    def wait(
        self,
        study_id: int,
        timeout: float = 600.0,
        on_update: Callable[[StudyView], None] | None = None,
    ) -> StudyView:
        """Long-poll until the study is terminal or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        view = self.study(study_id)
        while not StudyStatus(view.status).terminal:
            if on_update:
                on_update(view)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            view = self.study(study_id, wait=min(20.0, max(remaining, 0.1)))
        if on_update:
            on_update(view)
        return view

    # --- node side ------------------------------------------------------------------

    def publish_catalog(self, envelope: Envelope) -> NodeView:
        """Publish the node's catalog (an Envelope of kind ``catalog``)."""
        body = envelope.model_dump(mode="json")
        return NodeView.model_validate(
            self.http.request("PUT", f"{API}/node/catalog", json=body).json()
        )

    def publish_policy(self, envelope: Envelope) -> dict[str, Any]:
        """Publish the node's usage policy (an Envelope of kind ``policy``)."""
        body = envelope.model_dump(mode="json")
        return dict(self.http.request("PUT", f"{API}/node/policy", json=body).json())

    def publish_checkpoint(self, envelope: Envelope) -> dict[str, Any]:
        """Publish the node ledger's latest signed checkpoint (kind ``ledger.checkpoint``)."""
        body = envelope.model_dump(mode="json")
        return dict(self.http.request("PUT", f"{API}/node/checkpoint", json=body).json())

    def prekey_stock(self) -> int:
        """How many of this node's secure-aggregation prekeys the hub holds unassigned."""
        return int(self.http.request("GET", f"{API}/node/secagg/prekeys").json()["available"])

    def upload_prekeys(self, envelope: Envelope) -> int:
        """Upload signed one-time prekeys (kind ``secagg.prekeys``); returns the new stock."""
        body = envelope.model_dump(mode="json")
        reply = self.http.request("POST", f"{API}/node/secagg/prekeys", json=body).json()
        return int(reply["available"])

    def rotate_node_key(self, envelope: Envelope) -> dict[str, Any]:
        """Register a new node key (an Envelope of kind ``key.rotate`` signed by the old key)."""
        body = envelope.model_dump(mode="json")
        return dict(self.http.request("POST", f"{API}/node/key", json=body).json())

    def hub_key(self) -> dict[str, Any]:
        """The hub's current public key and its rotation statements, oldest first."""
        return dict(self.http.request("GET", f"{API}/hub/key").json())

    def next_task(self, wait: float = 20.0) -> TaskAssignment | None:
        response = self.http.request(
            "GET", f"{API}/node/tasks/next", params={"wait": wait}, timeout=wait + 30
        )
        if response.status_code == 204 or not response.content:
            return None
        return TaskAssignment.model_validate(response.json())

    def post_result(self, task_id: int, envelope: Envelope) -> TaskAck:
        """Post a signed result (an Envelope of kind ``task.result`` carrying a TaskResult)."""
        body = envelope.model_dump(mode="json")
        response = self.http.request("POST", f"{API}/node/tasks/{task_id}/result", json=body)
        return TaskAck.model_validate(response.json())


    # --- specialty-disease registries (docs/registries.md) ----------------------------

    def create_registry(self, spec: RegistrySpec | dict[str, Any]) -> RegistryView:
        """Register a registry, or its next version when the definition changed (operator)."""
        body = spec.model_dump(mode="json") if isinstance(spec, RegistrySpec) else spec
        return RegistryView.model_validate(
            self.http.request("POST", f"{API}/registries", json=body).json())

    def registries(self) -> list[RegistryView]:
        """Every registry with per-node sizes; a node sees those it takes part in."""
        response = self.http.request("GET", f"{API}/registries", params={"limit": 500})
        return RegistryList.model_validate(response.json()).registries

    def registry(self, name: str) -> RegistryView:
        return RegistryView.model_validate(
            self.http.request("GET", f"{API}/registries/{name}").json())

    def report_registries(self, envelope: Envelope) -> RegistryReportAck:
        """A node's materialisation status (an Envelope of kind ``registry.status``)."""
        body = envelope.model_dump(mode="json")
        return RegistryReportAck.model_validate(
            self.http.request("PUT", f"{API}/node/registries", json=body).json())

    # --- governance: dry-run checks, approvals, feedback ------------------------------

    def check(self, spec: StudySpec | dict[str, Any]) -> dict[str, Decision]:
        """What submitting ``spec`` would decide per node (a dry run; nothing is stored)."""
        body = spec.model_dump(mode="json") if isinstance(spec, StudySpec) else spec
        data = self.http.request("POST", f"{API}/studies/check", json=body).json()
        return {name: Decision.model_validate(d) for name, d in data["nodes"].items()}

    def approvals(self, status: str = "pending") -> list[dict[str, Any]]:
        """Approvals in ``status`` (pending|approved|rejected|expired) on nodes you may see."""
        response = self.http.request("GET", f"{API}/approvals", params={"status": status})
        return list(response.json())

    def approve(
        self,
        study_id: int,
        node: str,
        *,
        step: str | None = None,
        comment: str | None = None,
        ethics_ref: str | None = None,
    ) -> dict[str, Any]:
        """Approve the next (or the named) step for one node of a study."""
        body = {"step": step, "comment": comment, "ethics_ref": ethics_ref}
        path = f"{API}/approvals/{study_id}/{node}/approve"
        return dict(self.http.request("POST", path, json=body).json())

    def reject(self, study_id: int, node: str, comment: str) -> dict[str, Any]:
        """Reject a study for one node; ``comment`` reaches the consumer."""
        path = f"{API}/approvals/{study_id}/{node}/reject"
        return dict(self.http.request("POST", path, json={"comment": comment}).json())

    def feedback(self, study_id: int, rating: int, comment: str | None = None) -> Feedback:
        """Rate a finished study you submitted (once)."""
        body = {"rating": rating, "comment": comment}
        response = self.http.request("POST", f"{API}/studies/{study_id}/feedback", json=body)
        return Feedback.model_validate(response.json())

    # --- metering, billing, KPIs ----------------------------------------------------

    def meter(self, *, study_id: int | None = None, node: str | None = None,
              period: str | None = None, limit: int = 100, offset: int = 0) -> MeterList:
        """Meter records you may see (one per task) and their totals."""
        params = {"study_id": study_id, "node": node, "period": period, "limit": limit,
                  "offset": offset}
        response = self.http.request("GET", f"{API}/meter", params=_given(params))
        return MeterList.model_validate(response.json())

    def statement(self, period: str, org: str | None = None, kind: str | None = None
                  ) -> Statement:
        """A month's invoice, earnings statement or platform summary."""
        params = _given({"period": period, "org": org, "kind": kind})
        response = self.http.request("GET", f"{API}/billing/statement", params=params)
        return Statement.model_validate(response.json())

    def account(self, org: str) -> AccountView:
        return AccountView.model_validate(
            self.http.request("GET", f"{API}/billing/accounts/{org}").json())

    def set_account(self, org: str, *, deposit: float | None = None,
                    credit_limit: float | None = None) -> AccountView:
        body = {"deposit": deposit, "credit_limit": credit_limit}
        return AccountView.model_validate(
            self.http.request("PUT", f"{API}/billing/accounts/{org}", json=body).json())

    def kpi(self, period: str) -> dict[str, Any]:
        """The month's KPI report (cost, efficiency, value, safety)."""
        return dict(self.http.request("GET", f"{API}/kpi", params={"period": period}).json())

    def sla_breaches(self, period: str | None = None) -> list[dict[str, Any]]:
        response = self.http.request("GET", f"{API}/sla/breaches",
                                     params=_given({"period": period}))
        return list(response.json())

    # --- federated learning -----------------------------------------------------------

    def progress(self, study_id: int) -> StudyProgress:
        """What a study reported round by round (training: loss, AUC, nodes)."""
        return StudyProgress.model_validate(
            self.http.request("GET", f"{API}/studies/{study_id}/progress").json())

    def models(self, name: str | None = None) -> list[ModelView]:
        response = self.http.request("GET", f"{API}/models", params=_given({"name": name}))
        return ModelList.model_validate(response.json()).models

    def model(self, model_id: int) -> ModelView:
        return ModelView.model_validate(self.http.request("GET", f"{API}/models/{model_id}")
                                        .json())

    def model_weights(self, model_id: int) -> ModelPackage:
        """The model's package, where the contributing nodes' policies release it to you."""
        return ModelPackage.model_validate(
            self.http.request("GET", f"{API}/models/{model_id}/weights").json())


def _given(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}

def results_document(view: StudyView) -> dict[str, Any]:
    """What ``study results --json`` prints: the analysis result, study id and node statuses."""
    latest: dict[str, str] = {}
    for task in sorted(view.tasks, key=lambda t: t.round):
        latest[task.node] = task.status.value
    doc: dict[str, Any] = dict(view.result or {})
    doc["study_id"] = view.id
    doc["status"] = view.status.value
    doc["nodes"] = latest
    if view.error:
        doc["error"] = view.error
    return doc
