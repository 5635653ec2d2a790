"""A similar-patient lookup request — the profile file's or the console form's content — the
``similar_patients`` study it becomes, and readers of its result for tables.

Pure (no I/O), so the CLI (through ``healthspace.client.lookup``) and the console, which may
not import the client, submit exactly the same StudySpec. The file format and the treatment
presets are described in docs/similar-patients.md ("Using the lookup").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator

from healthspace.analyses.base import Params
from healthspace.analyses.similar_params import (
    MAX_K,
    MAX_TREATMENTS,
    Outcome,
    Profile,
    Similarity,
    SimilarParams,
    Treatment,
)
from healthspace.cohort.models import _check_code, load_cohort
from healthspace.core.errors import InvalidInput, invalid_from_validation
from healthspace.core.models import NAME_PATTERN, StudySpec

ANALYSIS = "similar_patients"
PURPOSE = "clinical_care"

# Candidate treatments by name: ``--treatments insulin,sulfonylurea``. Codes are drug (ATC)
# or procedure (ICD-10-PCS) codes; the synthetic network (cdm/synth_vocab.py) records each.
PRESETS: dict[str, tuple[str, ...]] = {
    "metformin": ("ATC:A10BA%",),
    "sulfonylurea": ("ATC:A10BB%",),
    "insulin": ("ATC:A10AB%",),
    "statin": ("ATC:C10AA%",),
    "aspirin": ("ATC:B01AC06",),
    "warfarin": ("ATC:B01AA03",),
    "ccb": ("ATC:C08CA%",),
    "arb": ("ATC:C09CA%",),
    "loop_diuretic": ("ATC:C03CA%",),
    "ppi": ("ATC:A02BC%",),
    "erlotinib": ("ATC:L01XE03",),
    "pemetrexed": ("ATC:L01BA04",),
    "pci": ("ICD10PCS:027034Z",),
    "lobectomy": ("ICD10PCS:0BTC4ZZ",),
    "dialysis": ("ICD10PCS:5A1D70Z",),
}
DEFAULT_OUTCOMES = (Outcome(name="death", death=True, horizon_days=365),)
_NODE = re.compile(NAME_PATTERN)
M = TypeVar("M", bound=Params)
_SPEC = re.compile(r"^(?P<name>[^=@]+?)\s*(?:=(?P<codes>[^@]*))?(?:@\s*(?P<days>\S+))?$")


class LookupRequest(Params):
    """PROFILE.json: the patient, what to compare and follow, and the candidate pool —
    ``cohort`` (a cohort definition), ``registry`` (a registry's name) or, by default, the
    first diagnosis among ``index`` codes (default: the profile's first condition at ICD-10
    category level) inside an observation period."""

    title: str | None = Field(default=None, max_length=200)
    profile: Profile
    similarity: Similarity | None = None
    k: int | None = Field(default=None, ge=10, le=MAX_K)
    treatments: list[Treatment] = Field(default_factory=list, max_length=MAX_TREATMENTS)
    outcomes: list[Outcome] = Field(default_factory=list)
    km_outcome: str | None = None
    nodes: list[str] | None = None
    cohort: dict[str, Any] | None = None
    registry: str | None = Field(default=None, pattern=NAME_PATTERN)
    index: list[str] | None = Field(default=None, min_length=1, max_length=50)

    @field_validator("index")
    @classmethod
    def _index(cls, codes: list[str] | None) -> list[str] | None:
        return None if codes is None else [_check_code(c) for c in codes]

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        if not names:
            raise ValueError("nodes must not be empty when given")
        for name in names:
            if not _NODE.match(name):
                raise ValueError(f"node name {name!r} is not a valid name")
        if len(set(names)) != len(names):
            raise ValueError("nodes must not repeat")
        return names

    @model_validator(mode="after")
    def _one_pool(self) -> LookupRequest:
        given = [k for k in ("cohort", "registry", "index") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are alternative candidate pools: give one")
        return self


def _invalid(exc: ValidationError, prefix: Sequence[str | int] = ()) -> InvalidInput:
    """The first problem, named by its field; a cross-field problem is named by the key its
    message starts with (``treatments names must not repeat`` → treatments)."""
    first = exc.errors(include_url=False)[0]
    if first["loc"]:
        return invalid_from_validation(exc, prefix)
    message = str(first["msg"]).removeprefix("Value error, ")
    key = re.split(r"[ .,:]", message, maxsplit=1)[0]
    known = {*LookupRequest.model_fields, "similarity"}
    return InvalidInput(message, field=key if key in known else None)


def parse_request(data: dict[str, Any]) -> LookupRequest:
    """A lookup request from a mapping (a parsed file or form), errors naming the field."""
    try:
        return LookupRequest.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _days(text: str | None, field: str, spec: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{spec!r}: days after @ must be a whole number", field=field) from None


def _split(spec: str, field: str, shape: str) -> tuple[str, list[str], int | None]:
    found = _SPEC.match(spec.strip())
    if not found:
        raise InvalidInput(f"{spec!r} must look like {shape}", field=field)
    codes = [c.strip() for c in (found["codes"] or "").split(",") if c.strip()]
    return found["name"].strip(), codes, _days(found["days"], field, spec)


def parse_treatment(spec: str, field: str = "treatment") -> Treatment:
    """``NAME=CODE[,CODE...][@DAYS]``: a treatment started within DAYS (default 90) of index."""
    name, codes, days = _split(spec, field, "NAME=CODE[,CODE...][@DAYS]")
    if not codes:
        raise InvalidInput(f"{spec!r} names no codes: NAME=CODE[,CODE...][@DAYS]", field=field)
    data: dict[str, Any] = {"name": name, "codes": codes}
    if days is not None:
        data["window_days"] = days
    return _model(Treatment, data, field, spec)


def parse_outcome(spec: str, field: str = "outcome") -> Outcome:
    """``NAME=CODE[,CODE...][@DAYS]`` (the code ``death`` counts death), or ``death[@DAYS]``."""
    name, codes, days = _split(spec, field, "NAME=CODE[,CODE...][@DAYS] or death@DAYS")
    death = "death" in codes or (not codes and name == "death")
    data: dict[str, Any] = {"name": name, "codes": [c for c in codes if c != "death"],
                            "death": death}
    if days is not None:
        data["horizon_days"] = days
    return _model(Outcome, data, field, spec)


def _model(cls: type[M], data: dict[str, Any], field: str, spec: str) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = _invalid(exc)
        raise InvalidInput(f"{spec!r}: {first.message}", field=field) from exc


def preset(name: str) -> Treatment:
    """A built-in treatment by name (:data:`PRESETS`)."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise InvalidInput(f"unknown treatment {name!r}; built in: {', '.join(PRESETS)}",
                           field="treatments")
    return Treatment(name=key, codes=list(PRESETS[key]))


def amend(request: LookupRequest, *, presets: Iterable[str] = (),
          treatments: Iterable[Treatment] = (), outcomes: Iterable[Outcome] = (),
          k: int | None = None, nodes: Sequence[str] | None = None) -> LookupRequest:
    """The request with the command line's additions: preset and custom treatments
    appended; outcomes replacing the file's (and its ``km_outcome`` unless that names one of
    them); ``k`` and ``nodes`` replacing."""
    data = request.model_dump(mode="json", exclude_unset=True)
    added = [preset(name) for name in presets] + list(treatments)
    if added:
        data["treatments"] = data.get("treatments", []) + [
            t.model_dump(mode="json") for t in added]
        names = [t["name"] for t in data["treatments"]]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise InvalidInput(f"treatment {', '.join(twice)} is given twice",
                               field="treatments")
    if chosen := [o.model_dump(mode="json") for o in outcomes]:
        data["outcomes"] = chosen
        if data.get("km_outcome") not in {o["name"] for o in chosen}:
            data.pop("km_outcome", None)  # the curves follow the first of the new outcomes
    if k is not None:
        data["k"] = k
    if nodes is not None:
        data["nodes"] = list(nodes)
    return parse_request(data)


def index_codes(request: LookupRequest) -> list[str]:
    """The default pool's entry codes: ``index``, else the first condition's category
    (``ICD10:E11.9`` → ``ICD10:E11%``)."""
    if request.index:
        return list(request.index)
    if not request.profile.conditions:
        raise InvalidInput("the profile has no condition to draw candidates by: give index "
                           "codes, a cohort or a registry", field="index")
    vocab, _, code = request.profile.conditions[0].partition(":")
    return [f"{vocab}:{code.split('.')[0]}%"]


def index_cohort(codes: list[str]) -> dict[str, Any]:
    """First diagnosis among ``codes`` (the index date), inside an observation period."""
    return {"name": "Similar-patient candidates",
            "description": f"First diagnosis among {', '.join(codes)}, inside an observation "
                           f"period.",
            "entry": {"condition": {"codes": codes}},
            "inclusion": [{"observation_period": {"min_prior_observation_days": 0}}]}


def _title(request: LookupRequest) -> str:
    p = request.profile
    about = [f"age {p.age:g}", *([p.sex] if p.sex else []), *p.conditions[:4]]
    return f"Similar-patient lookup: {', '.join(about)}"[:200]


def build_spec(request: LookupRequest) -> StudySpec:
    """The ``similar_patients`` study (purpose ``clinical_care``) the request asks for."""
    params: dict[str, Any] = {"profile": request.profile.model_dump(mode="json")}
    if request.similarity is not None:
        params["similarity"] = request.similarity.model_dump(mode="json")
    if request.k is not None:
        params["k"] = request.k
    params["treatments"] = [t.model_dump(mode="json") for t in request.treatments]
    params["outcomes"] = [o.model_dump(mode="json")
                          for o in request.outcomes or DEFAULT_OUTCOMES]
    if request.km_outcome is not None:
        params["km_outcome"] = request.km_outcome
    try:
        SimilarParams.model_validate(params)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    spec: dict[str, Any] = {"analysis": ANALYSIS, "purpose": PURPOSE, "params": params,
                            "nodes": request.nodes, "title": request.title or _title(request)}
    if request.registry is not None:
        if "registry" not in StudySpec.model_fields:
            raise InvalidInput("this version cannot submit to a registry; give a cohort or "
                               "index codes", field="registry")
        spec["registry"] = request.registry
    elif request.cohort is not None:
        load_cohort(request.cohort)  # its errors name cohort.…
        spec["cohort"] = request.cohort
    else:
        spec["cohort"] = index_cohort(index_codes(request))
    try:
        return StudySpec.model_validate(spec)
    except ValidationError as exc:
        raise _invalid(exc) from exc


# --- reading the result (the CLI's tables and the console's page) --------------------------

MARKS = (30, 90, 180, 365, 730, 1095, 1825, 3650)  # days at which curves are read out


def bin_labels(edges: Sequence[float | None]) -> list[str]:
    """The similarity histogram's bins as text: ``0–0.25`` … ``≥ 6`` (a null last edge is
    open-ended)."""
    return [f"≥ {lo:g}" if hi is None else f"{lo:g}–{hi:g}"
            for lo, hi in zip(edges, edges[1:], strict=False) if lo is not None]


def survival_at(km: dict[str, Any], day: float) -> float | None:
    """The Kaplan–Meier step function at ``day``; None past the curve's last time (it ends
    where disclosure control coarsened the follow-up) or where a value is withheld."""
    timeline, survival = km.get("timeline") or [], km.get("survival") or []
    if not timeline or day > timeline[-1] or day < timeline[0]:
        return None
    value = None
    for time, s in zip(timeline, survival, strict=False):
        if time > day:
            break
        value = s
    return value


def time_points(groups: Sequence[dict[str, Any]], most: int = 4) -> list[int]:
    """The usual follow-up marks (days) up to the longest curve, at most ``most`` of them."""
    ends = [g["km"]["timeline"][-1] for g in groups if g.get("km") and g["km"].get("timeline")]
    if not ends:
        return []
    return [day for day in MARKS if day <= max(ends)][-most:]
