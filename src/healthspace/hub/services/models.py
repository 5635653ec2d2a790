"""The model registry: register a finished training study, show cards, release weights.

Weights never appear in a study's result: when a ``fl_train`` study finishes, its model is
registered here (name from ``params.model_name``, next version of that name) and the result
keeps only a reference. Who gets the weights follows the contributing nodes' policies:
``model_release`` none (registry only), deploy (nodes may fetch them to score their own
patients, and score studies carry them) or download (the training organisation may too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, false, func, select
from sqlalchemy.orm import Session

from healthspace.core.enums import PrincipalKind, Role, TaskStatus
from healthspace.core.errors import Forbidden, InvalidInput, NotFound
from healthspace.core.registry_models import ModelCard, ModelPackage, ModelView
from healthspace.governance.policy import strictest_release
from healthspace.hub.db.models import MeterRecord, Node, RegisteredModel, Study, Task
from healthspace.hub.principal import Principal
from healthspace.hub.services import audit, timeline
from healthspace.hub.services.ids import storable
from healthspace.hub.services.policies import node_policy

TRAINING = "fl_train"
SCORING = "score"
LIMITATIONS = [
    "Trained and evaluated on the contributing nodes' data only; validate locally before "
    "clinical use.",
    "Metrics are in-sample unless a validation share (holdout) was set.",
    "AUC comes from score histograms; auc_binning_error bounds the difference to the exact "
    "AUC.",
]


def _contribution(session: Session, study: Study) -> dict[str, Any]:
    """Persons each node contributed, as metered on the node (disclosure-controlled)."""
    rows = session.execute(
        select(Node.name, func.max(MeterRecord.persons), func.max(MeterRecord.persons_band))
        .join(Node, Node.id == MeterRecord.node_id)
        .where(MeterRecord.study_id == study.id, MeterRecord.status == "completed")
        .group_by(Node.name)
    ).all()
    return {name: {"persons": int(persons or 0), "band": band} for name, persons, band in rows}


def register(session: Session, now: datetime, study: Study) -> RegisteredModel | None:
    """Register the model of a finished training study and redact its weights from the
    study's result. Idempotent: a study registers at most one model."""
    result = dict(study.result or {})
    model = result.get("model")
    if study.analysis != TRAINING or not isinstance(model, dict) or "weights" not in model:
        return None
    params = study.params
    name = params.get("model_name") or f"study-{study.id}"
    latest = session.scalar(select(func.max(RegisteredModel.version))
                            .where(RegisteredModel.name == name))
    # Every node whose data shaped the model, including one dropped after some rounds: its
    # policy still governs the weights, and its organisation may see the model.
    node_rows = list(session.scalars(
        select(Node).where(Node.id.in_(select(Task.node_id).where(
            Task.study_id == study.id, Task.status == TaskStatus.COMPLETED)))
        .order_by(Node.name)))
    nodes = [n.name for n in node_rows]
    release = strictest_release([node_policy(n).model_release for n in node_rows])
    summary = {
        "rounds": len(result.get("rounds") or []),
        "selected_round": result.get("selected_round"),
        "hyperparameters": result.get("hyperparameters") or {},
        "metrics": result.get("metrics") or {},
        "validation": result.get("validation"),
        "contribution": _contribution(session, study),
        "dp": result.get("dp"),
        "secure_aggregation": bool(result.get("secure_aggregation")),
        "intended_use": params.get("intended_use"),
        "population": result.get("population") or {},
        "sites": result.get("sites") or {},
        "dataset": study.dataset,
    }
    row = RegisteredModel(
        name=name, version=int(latest or 0) + 1, study_id=study.id,
        owner_org_id=study.submitter.org_id, kind=str(model["architecture"]["kind"]),
        created_at=now, nodes=nodes, release=release, package=model, summary=summary,
    )
    session.add(row)
    session.flush()
    reference = {key: model[key] for key in ("architecture", "columns", "target")}
    study.result = {**result, "model": {"id": row.id, "name": row.name,
                                        "version": row.version, "release": release,
                                        **reference}}
    timeline.record(session, now, study.id, "model_registered", model_id=row.id,
                    name=row.name, version=row.version, release=release)
    return row


def view(row: RegisteredModel) -> ModelView:
    s = row.summary
    card = ModelCard(
        intended_use=s.get("intended_use"),
        target=str(row.package.get("target")),
        features=list(row.package["preparation"]["features"]),
        training_population=s.get("population") or {},
        performance=s.get("metrics") or {},
        validation=s.get("validation"),
        performance_by_site=s.get("sites") or {},
        limitations=LIMITATIONS,
    )
    return ModelView(
        id=row.id, name=row.name, version=row.version, study_id=row.study_id, kind=row.kind,
        owner=row.owner.name, created_at=row.created_at, nodes=list(row.nodes),
        rounds=int(s.get("rounds") or 0), selected_round=int(s.get("selected_round") or 0),
        hyperparameters=s.get("hyperparameters") or {}, metrics=s.get("metrics") or {},
        contribution=s.get("contribution") or {}, release=row.release,  # type: ignore[arg-type]
        dp=s.get("dp"), secure_aggregation=bool(s.get("secure_aggregation")), card=card,
        dataset=s.get("dataset"),
    )


def _visible(session: Session, principal: Principal) -> Select[RegisteredModel]:
    query = select(RegisteredModel)
    if principal.kind == PrincipalKind.NODE or principal.has_role(Role.OPERATOR, Role.AUDITOR):
        return query
    if principal.role == Role.CONSUMER:
        return query.where(RegisteredModel.owner_org_id == principal.org_id)
    if principal.role == Role.DATA_HOLDER_ADMIN:
        names = set(session.scalars(select(Node.name).where(Node.org_id == principal.org_id)))
        ids = [m.id for m in session.scalars(select(RegisteredModel))
               if names & set(m.nodes)]
        return query.where(RegisteredModel.id.in_(ids))
    return query.where(false())


def list_models(session: Session, principal: Principal, name: str | None = None,
                limit: int = 100, offset: int = 0) -> list[ModelView]:
    query = _visible(session, principal)
    if name is not None:
        query = query.where(RegisteredModel.name == name)
    rows = session.scalars(query.order_by(RegisteredModel.id.desc()).limit(limit)
                           .offset(offset))
    return [view(row) for row in rows]


def _get(session: Session, principal: Principal, model_id: int) -> RegisteredModel:
    if not storable(model_id) or session.get(RegisteredModel, model_id) is None:
        raise NotFound(f"model {model_id} not found")
    row = session.scalar(_visible(session, principal).where(RegisteredModel.id == model_id))
    if row is None:
        raise Forbidden(f"you may not see model {model_id}")
    return row


def get_model(session: Session, principal: Principal, model_id: int) -> ModelView:
    return view(_get(session, principal, model_id))


def package_of(row: RegisteredModel) -> ModelPackage:
    p = row.package
    return ModelPackage(id=row.id, name=row.name, version=row.version, target=p["target"],
                        architecture=p["architecture"], preparation=p["preparation"],
                        columns=p["columns"], weights=p["weights"],
                        dataset=row.summary.get("dataset"))


def download(session: Session, principal: Principal, model_id: int) -> ModelPackage:
    """The weights, if the contributing nodes' policies release them to this principal:
    any node with ``deploy`` or ``download``; the training organisation with ``download``."""
    row = _get(session, principal, model_id)
    if principal.kind == PrincipalKind.NODE:
        allowed = row.release in ("deploy", "download")
        why = "the contributing nodes' policies keep this model in the registry (none)"
    else:
        allowed = row.release == "download" and principal.org_id == row.owner_org_id
        why = (f"the contributing nodes' policies release this model as {row.release!r}; "
               "only 'download' lets the training organisation download its weights")
    if not allowed:
        audit.queue(session, principal.name, "model.download_refused", f"model:{row.id}",
                    {"release": row.release})
        session.commit()
        raise Forbidden(why)
    audit.queue(session, principal.name, "model.download", f"model:{row.id}",
                {"release": row.release, "version": row.version})
    session.commit()
    return package_of(row)


def check_scoring(session: Session, principal: Principal, params: dict[str, Any],
                  dataset: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate a score study's model at submission; returns the dataset to build (the
    model's own unless the study gives one)."""
    model_id = int(params["model_id"])
    row = session.get(RegisteredModel, model_id) if storable(model_id) else None
    if row is None:
        raise InvalidInput(f"model {model_id} is not in the registry", field="params.model_id")
    if not principal.is_operator and principal.org_id != row.owner_org_id:
        raise Forbidden(f"model {model_id} belongs to {row.owner.name}; only its organisation "
                        "may deploy it")
    if row.release == "none":
        raise Forbidden(f"model {model_id} may not leave the registry (model_release: none "
                        "at a contributing node)")
    return dataset if dataset is not None else row.summary.get("dataset")


def first_round_input(session: Session, study: Study) -> dict[str, Any] | None:
    """What round 1 of a study carries beyond its parameters: a score study's model."""
    if study.analysis != SCORING:
        return None
    row = session.get(RegisteredModel, int(study.params["model_id"]))
    if row is None:
        return None
    p = row.package
    return {"model": {"id": row.id, "name": row.name, "version": row.version,
                      "architecture": p["architecture"], "preparation": p["preparation"],
                      "weights": p["weights"]}}
