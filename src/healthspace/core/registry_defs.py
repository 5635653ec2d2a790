"""Wire models of specialty-disease registries (专病数据库): definition, views, node reports.

A registry is a named cohort definition plus an analysis-dataset spec and a refresh schedule,
registered at the hub and materialised on each participating node (docs/registries.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from healthspace.core.canonical import digest
from healthspace.core.models import REGISTRY_NAME_PATTERN, RegistryRef, Wire

__all__ = [
    "REGISTRY_NAME_PATTERN", "NodeRegistryStatus", "RegistryList", "RegistryRef",
    "RegistryRefresh", "RegistryReport", "RegistryReportAck", "RegistrySpec", "RegistryView",
    "ReportedRegistry", "Size", "definition_digest",
]

MAX_HOURS = 24 * 366
MAX_SIZE = 10**12
# A released size: a count rounded to 10, or "<k" when below the node's minimum cell size.
Size = int | str
_SUPPRESSED = re.compile(r"^<[0-9]{1,6}$")


def definition_digest(cohort: dict[str, Any], dataset: dict[str, Any]) -> str:
    """What binds a registry version's rows to its definition (hub, node and tasks agree)."""
    return digest({"cohort": cohort, "dataset": dataset})


def check_size(value: Size | None) -> Size | None:
    """A released size only: a non-negative multiple of 10, or ``"<k"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a size is a count rounded to 10 or '<k'")
    if isinstance(value, int):
        if value < 0 or value % 10 or value > MAX_SIZE:
            raise ValueError("a size is released rounded to 10 (a non-negative multiple of 10, "
                             "at most 10¹²)")
        return value
    if not _SUPPRESSED.match(value):
        raise ValueError("a suppressed size is written '<k', e.g. '<10'")
    return value


class RegistryRefresh(Wire):
    """When nodes rebuild the registry: every ``every_hours``, and after a re-ingest."""

    every_hours: int = Field(default=24, ge=1, le=MAX_HOURS)
    on_ingest: bool = True


class RegistrySpec(Wire):
    """What the operator registers (``POST /registries``); a changed spec is a new version."""

    name: str = Field(pattern=REGISTRY_NAME_PATTERN,
                      description="slug: lower-case letters, digits, _ and -")
    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    cohort: dict[str, Any] = Field(description="a cohort definition (docs/cohorts.md)")
    dataset: dict[str, Any] = Field(description="an analysis-dataset spec "
                                                "(docs/analysis-datasets.md)")
    refresh: RegistryRefresh = Field(default_factory=RegistryRefresh)
    nodes: list[str] | None = Field(
        default=None, description="participating nodes; default: every hospital node that "
        "holds data (as for studies)")

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, nodes: list[str] | None) -> list[str] | None:
        if nodes is not None:
            if not nodes:
                raise ValueError("nodes must not be empty when given")
            if len(set(nodes)) != len(nodes):
                raise ValueError("nodes must not repeat")
        return nodes

    @model_validator(mode="after")
    def _definitions(self) -> RegistrySpec:
        # InvalidInput naming e.g. ``cohort.entry`` or ``dataset.covariates[2].window``
        # passes through pydantic unchanged: the hub answers 422 with that field.
        from healthspace.cohort.dataset import load_dataset
        from healthspace.cohort.models import load_cohort

        load_cohort(self.cohort)
        load_dataset(self.dataset)
        return self

    def digest(self) -> str:
        return definition_digest(self.cohort, self.dataset)


class NodeRegistryStatus(Wire):
    """One node's materialisation of a registry, as the node last reported it."""

    node: str
    version: int | None = Field(default=None, description="the version materialised")
    current: bool = Field(default=False, description="the materialised version is the "
                                                     "registry's current one")
    size: Size | None = Field(default=None, description="persons, rounded to 10; '<k' "
                              "below the node's minimum cell size; null before the first "
                              "refresh")
    dataset_size: Size | None = Field(default=None, description="rows of the analysis "
                                      "dataset, released as size")
    refreshed_at: datetime | None = None
    reported_at: datetime | None = None
    error: str | None = None


class RegistryView(Wire):
    """A registry's current version, with each participating node's status."""

    name: str
    title: str
    description: str | None = None
    cohort: dict[str, Any]
    dataset: dict[str, Any]
    refresh: RegistryRefresh
    nodes: list[str] | None = Field(default=None, description="as registered (null: default)")
    version: int
    digest: str
    created_at: datetime = Field(description="when this version was registered")
    created_by: str
    first_registered_at: datetime
    participants: list[str] = Field(description="the nodes that take part now (a node "
                                                "sees only itself)")
    status: dict[str, NodeRegistryStatus] = Field(
        default_factory=dict, description="node -> its materialisation (a node sees its own)")

    def ref(self) -> RegistryRef:
        return RegistryRef(name=self.name, version=self.version, digest=self.digest)


class RegistryList(Wire):
    registries: list[RegistryView]


class ReportedRegistry(Wire):
    """One registry in a node's status report (payload of a ``registry.status`` envelope)."""

    name: str = Field(pattern=REGISTRY_NAME_PATTERN)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size: Size | None = None
    dataset_size: Size | None = None
    refreshed_at: datetime | None = None
    error: str | None = Field(default=None, max_length=2000)

    @field_validator("size", "dataset_size")
    @classmethod
    def _released(cls, value: Size | None) -> Size | None:
        return check_size(value)

    @field_validator("refreshed_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a timestamp needs its time zone (e.g. Z)")
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("timestamp out of range") from exc


class RegistryReport(Wire):
    registries: list[ReportedRegistry] = Field(max_length=500)

    @field_validator("registries")
    @classmethod
    def _distinct(cls, items: list[ReportedRegistry]) -> list[ReportedRegistry]:
        names = [r.name for r in items]
        if len(set(names)) != len(names):
            raise ValueError("a registry is reported at most once")
        return items


class RegistryReportAck(Wire):
    node: str
    accepted: list[str]
    envelope_id: int
