"""Conversions from hub store rows to the core wire models returned by the API."""

from __future__ import annotations

from healthspace.core.enums import OrgKind, Role, StudyStatus, TaskStatus
from healthspace.core.models import Catalog, NodeView, OrgView, StudyView, TaskView, UserView
from healthspace.hub.db.models import Node, Organisation, Study, Task, User


def org_view(org: Organisation) -> OrgView:
    return OrgView(
        id=org.id,
        name=org.name,
        kind=OrgKind(org.kind),
        display_name=org.display_name,
        created_at=org.created_at,
    )


def user_view(user: User) -> UserView:
    return UserView(
        id=user.id,
        name=user.name,
        org=user.org.name,
        role=Role(user.role),
        created_at=user.created_at,
    )


def node_view(node: Node) -> NodeView:
    return NodeView(
        id=node.id,
        name=node.name,
        org=node.org.name,
        org_kind=OrgKind(node.org.kind),
        enrolled_at=node.enrolled_at,
        last_seen_at=node.last_seen_at,
        public_key=node.public_key,
        catalog=Catalog.model_validate(node.catalog) if node.catalog is not None else None,
    )


def task_view(task: Task) -> TaskView:
    return TaskView(
        node=task.node.name,
        round=task.round,
        status=TaskStatus(task.status),
        error=task.error,
        queued_at=task.queued_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        attempts=task.attempts,
    )


def study_view(study: Study) -> StudyView:
    return StudyView(
        id=study.id,
        title=study.title,
        analysis=study.analysis,
        params=study.params,
        cohort=study.cohort,
        purpose=study.purpose,
        nodes=list(study.nodes),
        status=StudyStatus(study.status),
        round=study.round,
        submitted_by=study.submitter.name,
        created_at=study.created_at,
        updated_at=study.updated_at,
        result=study.result,
        error=study.error,
        tasks=[task_view(task) for task in study.tasks],
    )
