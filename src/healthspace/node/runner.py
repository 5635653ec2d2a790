"""Run one task assignment on the node's read-only CDM store and produce a TaskResult."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthspace.analyses.base import Linkage, RegistryRows
from healthspace.analyses.execute import LocalRun, run_local
from healthspace.analyses.secure import Masker
from healthspace.cdm.store import open_store
from healthspace.core.clock import Clock
from healthspace.core.enums import TaskStatus
from healthspace.core.envelope import EnvelopeError
from healthspace.core.errors import HealthspaceError, InvalidInput, Refused
from healthspace.core.metering import Meter
from healthspace.core.models import TaskAssignment, TaskMetrics, TaskResult
from healthspace.governance.consent_filter import ConsentFilter
from healthspace.governance.engine import Outcome
from healthspace.governance.policy import (
    UsagePolicy,
    preview_params,
    release_params,
    site_counts_released,
)
from healthspace.node import budget, consent, differencing, secagg
from healthspace.node.guard import recheck
from healthspace.node.metering import build_meter, released_persons
from healthspace.node.registries import Shelf
from healthspace.node.state import NodeState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Execution:
    """A task's result and the node's meter of it (refused and failed tasks are metered too)."""

    result: TaskResult
    meter: Meter


def run_task(store: Path, assignment: TaskAssignment, **kwargs: Any) -> TaskResult:
    """Run one task and return its result only (see :func:`execute_task`)."""
    return execute_task(store, assignment, **kwargs).result


def execute_task(
    store: Path,
    assignment: TaskAssignment,
    *,
    site: str,
    state: NodeState | None = None,
    min_cell_size: int = 10,
    clock: Clock | None = None,
    require_hub_signature: bool = True,
    connection: Any = None,
    feature_cache: Any = None,
    registries: Shelf | None = None,
) -> Execution:
    """Never raises: a refusal or failure becomes a TaskResult the hub can report per node.

    With a ``state`` (always, in the agent), the node re-checks the task against its own
    policy and applies its patient-consent filter. The minimum cell size is the strictest of
    the node's own, its policy's and the task's. ``connection`` is an open read-only CDM
    connection the caller keeps between tasks — the DuckDB store or an engine adapter
    (:mod:`healthspace.cdm.engines`); without it the DuckDB store is opened for this task.
    ``feature_cache`` (:class:`healthspace.analyses.similar_features.FeatureCache`) keeps the
    similar-patient feature matrices built on that connection. A task targeting a registry
    reads its rows from ``registries`` (:mod:`healthspace.node.registries`) when a matching
    materialisation is there, and compiles its definition otherwise; consent and disclosure
    control apply the same either way.

    A task asking for ``dp_epsilon`` is charged to the consumer's ε budget before it runs
    (refused when the budget would be exceeded) and refunded if it then fails. An exact count
    whose cohort differs from one already released to the consumer by fewer than k persons is
    refused (:mod:`healthspace.node.differencing`); released cohorts are remembered.
    A preview (hub-signed ``preview``) runs in the policy's preview mode whatever its
    parameters ask: an obfuscated count, or a DP count charged to the budget; never exact.

    The meter (:mod:`healthspace.node.metering`) counts the store rows the task read, the
    persons contributing (disclosure-controlled), compute seconds, payload bytes and ε spent.
    """
    charged = False
    epsilon: float | None = None
    k = max(assignment.min_cell_size, min_cell_size)
    site_counts = True
    run: LocalRun | None = None
    params = dict(assignment.params)
    started = time.perf_counter()
    try:
        consent_filter: ConsentFilter | None = None
        guard: differencing.ReleaseGuard | None = None
        masker: Masker | None = None
        if state is not None:
            policy = state.policy()
            decision = recheck(assignment, policy, state, clock=clock,
                               require_hub_signature=require_hub_signature)
            if decision.outcome != Outcome.ALLOW:
                reasons = "; ".join(r.message for r in decision.reasons)
                raise Refused(f"refused by the node's policy: {reasons}")
            k = max(k, policy.min_cell_size)
            consent_filter = consent.build_filter(state, assignment.purpose, assignment.study_id)
            try:
                params = _node_params(policy, assignment)
            except ValueError as exc:
                raise Refused(str(exc)) from None
            epsilon = _dp_epsilon(assignment.analysis, params)
            if epsilon is not None and not _charged_now(assignment):
                epsilon = None  # an iterative DP analysis spends its ε in round 1 only
            if epsilon is not None:  # a DP preview is charged like any DP task
                budget.charge(state, policy, assignment, epsilon)
                charged = True
            if not assignment.preview:  # a preview's count is noised: nothing to difference
                guard = differencing.node_guard(state, policy, assignment, k)
            site_counts = site_counts_released(policy)
            if assignment.secure is not None:
                masker = secagg.masker_for(state, assignment, site)
        elif assignment.secure is not None:
            raise Refused("secure aggregation needs the node's state (its one-time keys)")
        con = connection or open_store(store, read_only=True)
        rows = _registry_rows(registries, con, assignment)
        try:
            run = run_local(
                con,
                site=site,
                analysis=assignment.analysis,
                params=params,
                cohort=assignment.cohort,
                dataset=assignment.dataset,
                round_input=assignment.round_input,
                min_cell_size=k,
                purpose=assignment.purpose,
                clock=clock,
                consent=consent_filter,
                release_guard=guard,
                masker=masker,
                release_site_counts=site_counts,
                linkage=_linkage(state, assignment) if state is not None else None,
                score_sink=_score_sink(state, assignment) if state is not None else None,
                findings_sink=_findings_sink(state, assignment) if state is not None else None,
                feature_cache=feature_cache,
                registry=rows,
            )
        finally:
            Shelf.detach(con, rows)
            if connection is None:
                con.close()
        if guard is not None:
            guard.commit()  # only now: a failed task released nothing
        persons, _ = released_persons(run.records, k, secure=assignment.secure is not None,
                                      own_count_released=site_counts, noised=_noised(params))
        result = TaskResult(
            status=TaskStatus.COMPLETED,
            partial=run.partial,
            metrics=TaskMetrics(records=persons, seconds=run.seconds, bytes=run.bytes),
        )
    except (Refused, EnvelopeError) as exc:
        result = TaskResult(status=TaskStatus.REFUSED, error=str(exc))
    except InvalidInput as exc:
        # The hub validated this request; a node that still finds it invalid refuses it.
        result = TaskResult(status=TaskStatus.REFUSED, error=f"invalid request: {exc}")
    except HealthspaceError as exc:
        result = TaskResult(status=TaskStatus.FAILED, error=str(exc))
    except Exception as exc:  # report, do not crash the agent; details stay in the node log
        log.exception("task %s failed", assignment.task_id)
        result = TaskResult(status=TaskStatus.FAILED,
                            error=f"{type(exc).__name__}: {exc}"[:4000])
    completed = result.status == TaskStatus.COMPLETED
    if charged and state is not None and not completed:
        budget.refund(state, assignment)  # nothing was released: the ε is not spent
    meter = build_meter(
        assignment, result,
        records_scanned=run.records_scanned if run is not None else 0,
        persons=run.records if run is not None and completed else 0,
        seconds=run.seconds if run is not None else time.perf_counter() - started,
        epsilon=float(epsilon or 0.0) if charged and completed else 0.0,
        k=k, own_count_released=site_counts, noised=_noised(params),
    )
    return Execution(result, meter)


def _registry_rows(shelf: Shelf | None, con: Any, assignment: TaskAssignment
                   ) -> RegistryRows | None:
    """The registry's rows in ``con``'s session, or None: the definition is compiled (live)."""
    if assignment.registry is None:
        return None
    if shelf is None:
        log.info("task %s: no registry folder given; computing registry %s live",
                 assignment.task_id, assignment.registry.name)
        return None
    try:
        return shelf.attach(con, assignment)
    except Exception:  # an unreadable file: the live path gives the same answer
        log.exception("task %s: reading registry %s failed; computing live",
                      assignment.task_id, assignment.registry.name)
        return None


def _noised(params: dict[str, Any]) -> bool:
    """Whether the node releases a noised count (DP or obfuscated): the parameters it ran with,
    after a preview's or the policy's forcing, say so."""
    return params.get("dp_epsilon") is not None or bool(params.get("obfuscate"))


def _linkage(state: NodeState, assignment: TaskAssignment) -> Linkage:
    """The node's identity vault and per-study secrets, for record-linkage analyses."""
    study = assignment.study_id
    return Linkage(
        national_ids=state.national_ids,
        study_secret=lambda label: state.derive_secret(f"study:{study}/{label}"),
        keep_links=lambda persons: state.keep_links(study, persons),
    )


def _charged_now(assignment: TaskAssignment) -> bool:
    """Whether this task spends the study's ``dp_epsilon``: every task, or only the first
    round's for analyses that account their ε over all rounds (federated training)."""
    from healthspace.analyses import registry

    return (registry.get(assignment.analysis).dp_charge == "every_round"
            or assignment.round_input is None)


def _score_sink(state: NodeState, assignment: TaskAssignment) -> Any:
    """Where a score task writes its risk scores: the node's own ``model_scores`` table."""
    def save(model: dict[str, Any], person_ids: Any, scores: Any) -> None:
        state.save_scores(model, assignment.study_id, person_ids, scores)

    return save


def _findings_sink(state: NodeState, assignment: TaskAssignment) -> Any:
    """Where an analysis keeps per-record findings: the node's own ``findings`` table."""
    def save(kind: str, rows: list[dict[str, Any]]) -> int:
        return state.save_findings(assignment.study_id, kind, rows)

    return save


def _node_params(policy: UsagePolicy, assignment: TaskAssignment) -> dict[str, Any]:
    """The parameters this node runs with: a preview's forced release mode, else the policy's
    release rules (raises ValueError when the policy cannot honour the request)."""
    if assignment.preview:
        return preview_params(policy, assignment.params)
    return release_params(policy, assignment.analysis, dict(assignment.params))


def _dp_epsilon(analysis: str, params: dict[str, Any]) -> float | None:
    """The ε a task asks to spend, after validating its parameters as the analysis will."""
    if params.get("dp_epsilon") is None:
        return None
    from healthspace.analyses import registry

    parsed = registry.get(analysis).parse_params(params)
    epsilon = getattr(parsed, "dp_epsilon", None)
    if epsilon is None:
        raise InvalidInput(f"analysis {analysis!r} takes no dp_epsilon",
                           field="params.dp_epsilon")
    return float(epsilon)
