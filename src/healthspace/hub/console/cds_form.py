"""The "Similar patients" form: its text fields to a lookup request and back, and an error's
field path to the form field it belongs to. The request becomes a study through
``analyses.similar_lookup``, exactly as ``healthspace cds lookup`` builds it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from healthspace.analyses.similar_lookup import (
    PRESETS,
    LookupRequest,
    build_spec,
    parse_outcome,
    parse_request,
    parse_treatment,
)
from healthspace.analyses.similar_params import Outcome, Treatment
from healthspace.core.errors import HealthspaceError
from healthspace.core.models import StudySpec

Values = dict[str, str]
T = Callable[..., str]
EXAMPLE = "cds_profile_t2d.json"
# Form field -> its label (an English msgid); "form" is the error about the whole request.
LABELS = {"age": "Age", "sex": "Sex", "conditions": "Diagnoses", "labs": "Lab values",
          "drugs": "Current drugs", "presets": "Treatments to compare",
          "treatments": "Other treatments", "outcomes": "Outcomes",
          "k": "Similar patients per node", "index": "Candidate pool",
          "km_outcome": "Outcome of the survival curves", "nodes": "Target nodes",
          "title": "Title", "form": "Lookup"}
_SEP = re.compile(r"[\s,;]+")


def defaults() -> Values:
    return {"outcomes": "death@365", "k": "200"}


def _codes(text: str) -> list[str]:
    return [c for c in _SEP.split(text.strip()) if c]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\n;]", text) if line.strip()]


def _labs(text: str, t: T) -> dict[str, float]:
    labs: dict[str, float] = {}
    for n, line in enumerate(_lines(text), 1):
        code, sep, value = line.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not code.strip() or number != number:
            raise ValueError(t("Line {n}: write CODE=VALUE, e.g. LOINC:4548-4=8.4.", n=n))
        labs[code.strip()] = number
    return labs


def field_key(field: str | None) -> str:
    """The form field an error's path (``profile.labs``, ``params.treatments[1].codes``,
    ``nodes[0]``) belongs to."""
    path = (field or "").removeprefix("params.")
    head = re.split(r"[.\[]", path.removeprefix("profile."), maxsplit=1)[0]
    if head in ("treatment", "--treatment"):
        return "treatments"
    return head if head in LABELS else "form"


def spec_from(values: Mapping[str, str], presets: Sequence[str], nodes: Sequence[str],
              t: T) -> tuple[StudySpec | None, dict[str, str]]:
    """The study the form asks for, or the errors per form field."""
    errors: dict[str, str] = {}
    profile: dict[str, Any] = {"conditions": _codes(values.get("conditions", "")),
                               "drugs": _codes(values.get("drugs", ""))}
    try:
        profile["age"] = float(values.get("age", "").strip())
    except ValueError:
        errors["age"] = t("Give the age in years, e.g. 62.")
    if values.get("sex") in ("F", "M"):
        profile["sex"] = values["sex"]
    try:
        profile["labs"] = _labs(values.get("labs", ""), t)
    except ValueError as exc:
        errors["labs"] = str(exc)
    data: dict[str, Any] = {"profile": profile}
    unknown = [name for name in presets if name not in PRESETS]
    chosen: list[dict[str, Any]] = [{"name": n, "codes": list(PRESETS[n])}
                                    for n in presets if n in PRESETS]
    if unknown:
        errors["presets"] = t("Unknown treatment: {names}.", names=", ".join(unknown))
    try:
        chosen += [parse_treatment(line, "treatments").model_dump(mode="json")
                   for line in _lines(values.get("treatments", ""))]
        data["outcomes"] = [parse_outcome(line, "outcomes").model_dump(mode="json")
                            for line in _lines(values.get("outcomes", ""))]
    except HealthspaceError as exc:
        errors[field_key(exc.field)] = exc.message
    data["treatments"] = chosen
    try:
        if values.get("k", "").strip():
            data["k"] = int(values["k"])
    except ValueError:
        errors["k"] = t("Give a whole number from 10 to 5000.")
    if index := _codes(values.get("index", "")):
        data["index"] = index
    for key in ("km_outcome", "title"):
        if text := values.get(key, "").strip():
            data[key] = text
    if nodes:
        data["nodes"] = list(nodes)
    if errors:
        return None, errors
    try:
        return build_spec(parse_request(data)), {}
    except HealthspaceError as exc:
        return None, {field_key(exc.field): message(exc)}


def message(exc: HealthspaceError) -> str:
    """The message, with the part of the field the form does not show (``[1].codes``)."""
    path = (exc.field or "").removeprefix("params.").removeprefix("profile.")
    return exc.message if path in LABELS or not path else f"{path}: {exc.message}"


def _treatment_line(t: Treatment) -> str:
    return f"{t.name}={','.join(t.codes)}@{t.window_days}"


def _outcome_line(o: Outcome) -> str:
    codes = [*o.codes, *(["death"] if o.death else [])]
    if codes == ["death"] and o.name == "death":
        return f"death@{o.horizon_days}"
    return f"{o.name}={','.join(codes)}@{o.horizon_days}"


def values_from(request: LookupRequest) -> tuple[Values, list[str], list[str]]:
    """The form's values, ticked presets and nodes for a request (the worked example)."""
    p = request.profile
    ticked = [t.name for t in request.treatments
              if tuple(t.codes) == PRESETS.get(t.name) and t.window_days == 90]
    values = {"age": f"{p.age:g}", "sex": p.sex or "", "conditions": ", ".join(p.conditions),
              "labs": "\n".join(f"{code}={value:g}" for code, value in p.labs.items()),
              "drugs": ", ".join(p.drugs),
              "treatments": "\n".join(_treatment_line(t) for t in request.treatments
                                      if t.name not in ticked),
              "outcomes": "\n".join(_outcome_line(o) for o in request.outcomes) or "death@365",
              "k": str(request.k or 200), "index": ", ".join(request.index or []),
              "km_outcome": request.km_outcome or "", "title": request.title or ""}
    return values, ticked, list(request.nodes or [])


@cache
def example() -> LookupRequest:
    """The bundled worked example (a type 2 diabetes patient)."""
    text = resources.files("healthspace.examples").joinpath(EXAMPLE).read_text("utf-8")
    return parse_request(json.loads(text))
