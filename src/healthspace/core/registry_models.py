"""Wire models of the model registry and of study progress (federated learning)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from healthspace.core.models import Wire

Release = Literal["none", "deploy", "download"]


class ModelCard(Wire):
    """What the model is for, whom it was trained on, and how well it does where."""

    intended_use: str | None = None
    target: str
    features: list[str]
    training_population: dict[str, Any] = Field(
        description="network totals: rows, events, prevalence, feature means and SDs")
    performance: dict[str, Any] = Field(description="network metrics of the chosen model")
    validation: dict[str, Any] | None = None
    performance_by_site: dict[str, Any] = Field(
        description="node -> its own n, AUC and Brier score, or null where withheld")
    limitations: list[str] = Field(default_factory=list)


class ModelView(Wire):
    """A registered model version, without its weights."""

    id: int
    name: str
    version: int
    study_id: int
    kind: str
    owner: str = Field(description="the consumer organisation that trained it")
    created_at: datetime
    nodes: list[str]
    rounds: int
    selected_round: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    contribution: dict[str, Any] = Field(
        description="node -> persons it contributed (as metered, disclosure-controlled)")
    release: Release = Field(description="the strictest of the contributing nodes' "
                                         "model_release: none, deploy (to nodes), download")
    dp: dict[str, Any] | None = None
    secure_aggregation: bool = False
    card: ModelCard
    dataset: dict[str, Any] | None = None


class ModelList(Wire):
    models: list[ModelView]


class ModelPackage(Wire):
    """Everything needed to score with a model: architecture, feature preparation, weights."""

    id: int
    name: str
    version: int
    target: str
    architecture: dict[str, Any]
    preparation: dict[str, Any]
    columns: list[str]
    weights: dict[str, Any] = Field(description="float64 array, healthspace.core.encoding")
    dataset: dict[str, Any] | None = None


class ProgressEntry(Wire):
    at: datetime
    round: int = Field(description="the hub round that produced this entry")
    entry: dict[str, Any]


class StudyProgress(Wire):
    study_id: int
    analysis: str
    status: str
    round: int
    total_rounds: int | None = None
    entries: list[ProgressEntry]
    nodes_reporting: dict[str, int] = Field(
        default_factory=dict, description="hub round -> nodes that completed it")
