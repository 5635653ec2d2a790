"""The study builder: a cohort form with code search, the policy and feasibility previews,
then the analysis and its parameters — every step through the services the API uses."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args, get_origin

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from healthspace.analyses import registry
from healthspace.analyses.base import Analysis
from healthspace.cohort.dataset import load_dataset
from healthspace.cohort.models import EVENT_KINDS, CohortDefinition
from healthspace.core.documents import parse_text
from healthspace.core.enums import Role
from healthspace.core.errors import HealthspaceError, InvalidInput, field_path
from healthspace.core.models import StudySpec, StudyView
from healthspace.hub.console.web import PREFIX, TEMPLATES, Viewer, check_csrf, page, render
from healthspace.hub.deps import HubState, get_hub
from healthspace.hub.notifier import node_topic
from healthspace.hub.services import nodes as node_service
from healthspace.hub.services import studies

router = APIRouter()
BUILDERS = (Role.CONSUMER, Role.OPERATOR)
ROWS = 3  # inclusion rows, and exclusion rows, on the form
OPS = ("gt", "gte", "lt", "lte", "eq")
CODE_HITS = 50  # code-search answers at most this many codes
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colours in library messages
Values = dict[str, str]


@dataclass(frozen=True)
class Param:
    """One parameter field; ``kind`` (text, list, number, bool, choice, node), ``choices`` and
    ``default`` (as form text) come from the analysis' own ``params_model``."""

    key: str
    name: str
    kind: str
    choices: tuple[str, ...]
    default: str


# analysis -> (label, the parameters the form offers; the others keep their defaults)
ANALYSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cohort_count": ("Cohort counts (feasibility)", ("breakdown", "obfuscate", "dp_epsilon")),
    "summary": ("Descriptive statistics", ("variables", "categorical", "by")),
    "glm": ("Generalised linear model", ("formula", "family", "offset")),
    "km": ("Kaplan–Meier survival", ("duration", "event", "group")),
    "cox": ("Cox proportional hazards", ("duration", "event", "covariates", "ties")),
    "fl_train": ("Federated learning (training)", (
        "target", "features", "model", "strategy", "rounds", "local_epochs", "learning_rate")),
    "casemix": ("Case mix (DRG)", ()),
    "drg_weights": ("DRG relative weights", ("trim", "iqr_factor")),
    "fraud_screen": ("Fund-fraud screening", ("readmit_days",)),
    "evidence_check": ("Evidence check against hospital records",
                       ("payer", "readmit_days", "readmissions")),
}
PARAM_LABELS = {
    "breakdown": "Age and sex breakdown", "dp_epsilon": "Differential privacy ε",
    "obfuscate": "Obfuscated counts (not differential privacy)", "variables": "Variables",
    "categorical": "Categorical variables", "by": "Stratify by", "formula": "Formula",
    "family": "Family", "offset": "Offset column", "duration": "Duration column",
    "event": "Event column", "group": "Group column", "covariates": "Covariates",
    "ties": "Ties", "target": "Target column", "features": "Features", "model": "Model",
    "strategy": "Strategy", "rounds": "Rounds", "local_epochs": "Local epochs",
    "learning_rate": "Learning rate", "trim": "Outlier trimming", "iqr_factor": "IQR factor",
    "readmit_days": "Readmission window (days)", "payer": "Payer node",
    "readmissions": "Also check split admissions"}
HINTS = {"dp_epsilon": "Empty: exact counts, small ones suppressed.",
         "formula": "For example: event ~ age + male + drug",
         **dict.fromkeys(("variables", "covariates", "features"),
                         "Column names, separated by commas.")}
NODE_PARAMS = frozenset({"payer"})  # a parameter naming one of the nodes
STATIC_LABELS = {
    "entry_kind": "Entry event", "entry_codes": "Entry codes", "age_min": "Age from",
    "age_max": "Age to", "sex": "Sex", "prior_days": "Prior observation (days)",
    "nodes": "Target nodes", "purpose": "Purpose", "title": "Title", "analysis": "Analysis",
    "dataset_choice": "Analysis dataset", "dataset_text": "Dataset spec (YAML or JSON)",
    "form": "Form"}
ROW_LABELS = {"kind": "Looks for", "codes": "Codes", "start": "From day", "end": "To day",
              "min": "At least (times)", "op": "Value", "value": "Value"}
_ROW_PART = {"codes": "codes", "concepts": "codes", "window": "start", "occurrences": "min",
             "value": "value"}


def uses_cohort(impl: Analysis) -> bool:
    return impl.requires_cohort or impl.uses_table


@cache
def params_of(name: str) -> tuple[Param, ...]:
    fields = registry.get(name).params_model.model_fields
    out = []
    for param in ANALYSES[name][1]:
        info = fields[param]
        kind_of, args = get_origin(info.annotation), get_args(info.annotation)
        kind = ("node" if param in NODE_PARAMS else "bool" if info.annotation is bool
                else "choice" if kind_of is Literal else "list" if kind_of is list
                else "number" if {int, float} & set(args or (info.annotation,)) else "text")
        default = info.default
        text = ("on" if default else "") if kind == "bool" else str(default) \
            if isinstance(default, str | int | float) and kind != "list" else ""
        out.append(Param(f"{name}.{param}", param, kind,
                         tuple(map(str, args)) if kind == "choice" else (), text))
    return tuple(out)


@cache
def example_datasets() -> dict[str, tuple[str, str, list[str]]]:
    """The bundled dataset specs: file stem -> (text, name, columns)."""
    out = {}
    for item in sorted(resources.files("healthspace.examples").iterdir(), key=lambda i: i.name):
        if item.name.endswith("_dataset.yaml"):
            text = item.read_text(encoding="utf-8")
            spec = load_dataset(parse_text(text, "dataset"))
            out[item.name.removesuffix(".yaml")] = (
                text, spec.name or item.name, [c for _, c in spec.columns()])
    return out


def defaults() -> Values:
    return {"entry_kind": "condition", "purpose": "research", "analysis": "cohort_count",
            **{p.key: p.default for name in ANALYSES for p in params_of(name)}}


def label(key: str, t: Any) -> str:
    """The form field's label, for the error summary."""
    if key in STATIC_LABELS:
        return str(t(STATIC_LABELS[key]))
    if match := re.fullmatch(r"(inc|exc)(\d)_(\w+)", key):
        side = t("Inclusion {n}", n=int(match[2]) + 1) if match[1] == "inc" \
            else t("Exclusion {n}", n=int(match[2]) + 1)
        return f"{side} · {t(ROW_LABELS.get(match[3], match[3]))}"
    name, _, param = key.partition(".")
    if name in ANALYSES and param in PARAM_LABELS:
        return f"{t(ANALYSES[name][0])} · {t(PARAM_LABELS[param])}"
    return key


# --- the form -> a cohort, parameters, a dataset, a study spec -----------------------------

def _codes(text: str) -> list[str]:
    return [c for c in re.split(r"[\s,;]+", text) if c]


class _Reader:
    """Reads numbers from the form, keeping a problem per field."""

    def __init__(self, values: Values, t: Any) -> None:
        self.values, self.t = values, t
        self.errors: dict[str, str] = {}

    def text(self, key: str) -> str:
        return self.values.get(key, "").strip()

    def number(self, key: str, whole: bool = True) -> Any:
        raw = self.text(key)
        if not raw:
            return None
        try:
            return int(raw) if whole else float(raw)
        except ValueError:
            self.errors[key] = self.t("Enter a whole number.") if whole \
                else self.t("Enter a number.")
            return None


def _criterion(r: _Reader, prefix: str) -> dict[str, Any] | None:
    kind, codes = r.text(f"{prefix}_kind"), _codes(r.text(f"{prefix}_codes"))
    start, end = r.number(f"{prefix}_start"), r.number(f"{prefix}_end")
    least, op = r.number(f"{prefix}_min"), r.text(f"{prefix}_op")
    value = r.number(f"{prefix}_value", whole=False)
    if not (kind or codes or start is not None or end is not None or least or op
            or value is not None):
        return None
    if not kind:
        r.errors[f"{prefix}_kind"] = r.t("Choose what the criterion looks for.")
        return None
    spec: dict[str, Any] = {"codes": codes}
    if start is not None or end is not None:
        spec["window"] = [start, end]
    if least is not None:
        spec["occurrences"] = {"min": least}
    if op or value is not None:
        if op not in OPS or value is None:
            r.errors[f"{prefix}_value"] = r.t("Choose a comparison and enter a number.")
            return None
        spec["value"] = {op: value}
    return {kind: spec}


def _locate(loc: tuple[Any, ...], where: Mapping[str, list[str]]) -> str:
    """The form field behind a cohort model error's location."""
    if not loc or loc[0] not in where or len(loc) < 2 or not isinstance(loc[1], int):
        return "entry_codes" if len(loc) > 1 and loc[1] in EVENT_KINDS else "entry_kind"
    prefix = where[str(loc[0])][loc[1]]
    if not prefix.startswith(("inc", "exc")):
        return "age_max" if prefix == "age_min" and "max" in loc else prefix
    if len(loc) < 3 or loc[2] not in EVENT_KINDS:
        return f"{prefix}_kind"
    return f"{prefix}_{_ROW_PART.get(str(loc[3]), 'codes') if len(loc) > 3 else 'codes'}"


def cohort_from(values: Values, t: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The cohort definition the form describes (None if left empty), and its problems."""
    r = _Reader(values, t)
    where: dict[str, list[str]] = {"inclusion": [], "exclusion": []}
    inclusion: list[dict[str, Any]] = []
    age = {k: v for k, v in (("min", r.number("age_min")), ("max", r.number("age_max")))
           if v is not None}
    prior = r.number("prior_days")
    for item, key in (({"age": age}, "age_min") if age else (None, ""),
                      ({"sex": r.text("sex")}, "sex") if r.text("sex") else (None, ""),
                      ({"observation_period": {"min_prior_observation_days": prior}},
                       "prior_days") if prior is not None else (None, "")):
        if item:
            inclusion.append(item)
            where["inclusion"].append(key)
    lists: dict[str, list[dict[str, Any]]] = {"inclusion": inclusion, "exclusion": []}
    for side, key in (("inc", "inclusion"), ("exc", "exclusion")):
        for i in range(ROWS):
            if (found := _criterion(r, f"{side}{i}")) is not None:
                lists[key].append(found)
                where[key].append(f"{side}{i}")
    codes = _codes(r.text("entry_codes"))
    if not codes and not inclusion and not lists["exclusion"] and not r.errors:
        return None, {}
    cohort: dict[str, Any] = {"entry": {r.text("entry_kind"): {"codes": codes}}}
    cohort.update({k: v for k, v in lists.items() if v})
    try:
        CohortDefinition.model_validate(cohort)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            r.errors.setdefault(_locate(tuple(e["loc"]), where),
                                f"{field_path(e['loc'], ('cohort',))}: {e['msg']}")
    return (None if r.errors else cohort), r.errors


def params_from(name: str, values: Values) -> tuple[dict[str, Any], dict[str, str]]:
    """The analysis' parameters, validated by its own ``params_model`` and ``parse_params``."""
    raw: dict[str, Any] = {}
    for p in params_of(name):
        value = values.get(p.key, "").strip()
        if p.kind == "bool":
            raw[p.name] = bool(value)
        elif p.kind == "list" and value:
            raw[p.name] = [v.strip() for v in value.split(",") if v.strip()]
        elif value and p.kind != "list":
            raw[p.name] = value
    impl = registry.get(name)
    try:
        impl.params_model.model_validate(raw)
        impl.parse_params(raw)
    except ValidationError as exc:
        return raw, _problems(exc, ("params",), name)
    except InvalidInput as exc:
        return raw, {_key(exc.field, name): str(exc)}
    return raw, {}


def dataset_from(values: Values, t: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    choice = values.get("dataset_choice", "")
    key = "dataset_text" if choice == "custom" else "dataset_choice"
    if not choice:
        return None, {key: t("Choose an analysis dataset: this analysis reads one row per "
                             "person.")}
    if choice == "custom":
        text = values.get("dataset_text", "").strip()
    elif choice in example_datasets():
        text = example_datasets()[choice][0]
    else:
        return None, {key: t("Choose a dataset spec from the list.")}
    try:
        data = parse_text(text, "dataset")
        if not isinstance(data, dict):  # never let text become a path the loader reads
            raise InvalidInput("an analysis-dataset spec must be an object", field="dataset")
        load_dataset(data)
    except InvalidInput as exc:
        return None, {key: str(exc)}
    return data, {}


def _key(field: str | None, analysis: str, custom: bool = False) -> str:
    """The form field a service error's ``field`` names."""
    parts = re.split(r"[.\[]", field or "")
    if parts[0] == "params":
        known = ANALYSES[analysis][1] if analysis in ANALYSES else ()
        return f"{analysis}.{parts[1]}" if parts[1:] and parts[1] in known else "analysis"
    if parts[0] == "dataset":
        return "dataset_text" if custom else "dataset_choice"
    if parts[0] == "cohort":
        return "entry_codes"
    return parts[0] if parts[0] in STATIC_LABELS else "form"


def _problems(exc: ValidationError, prefix: tuple[str, ...], analysis: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in exc.errors(include_url=False):
        path = field_path(e["loc"], prefix)
        out.setdefault(_key(path, analysis), f"{path}: {e['msg']}")
    return out


def spec_from(values: Values, nodes: list[str], t: Any,
              preview: bool = False) -> tuple[StudySpec | None, dict[str, str]]:
    """The study the form describes (a preview: a cohort_count of its cohort), or problems."""
    name = "cohort_count" if preview else values.get("analysis", "")
    if name not in ANALYSES:
        return None, {"analysis": t("Choose an analysis.")}
    impl = registry.get(name)
    cohort, errors = cohort_from(values, t) if preview or uses_cohort(impl) else (None, {})
    if preview and cohort is None and not errors:
        errors["entry_codes"] = t("A preview needs a cohort: give the entry event's codes.")
    params: dict[str, Any] = {}
    dataset = None
    if not preview:
        params, problems = params_from(name, values)
        errors.update(problems)
        if impl.uses_table:
            dataset, problems = dataset_from(values, t)
            errors.update(problems)
    if errors:
        return None, errors
    try:
        return StudySpec(analysis=name, params=params, cohort=cohort, dataset=dataset,
                         purpose=values.get("purpose") or "research", nodes=nodes or None,
                         title=values.get("title", "").strip() or None, preview=preview), {}
    except ValidationError as exc:
        return None, _problems(exc, (), name)


def values_from_study(view: StudyView) -> tuple[Values, bool]:
    """Form values for a stored study's cohort; True if part of it does not fit the form."""
    def s(v: Any) -> str:
        return "" if v is None else str(v)

    values = {**defaults(), "purpose": view.purpose, "title": s(view.title)}
    cohort, skipped, used = view.cohort or {}, False, {"inc": 0, "exc": 0}
    for kind, spec in (cohort.get("entry") or {}).items():
        values.update(entry_kind=kind, entry_codes=", ".join(spec.get("codes", [])))
        skipped |= bool(spec.get("concepts") or spec.get("value"))
    for side, key in (("inc", "inclusion"), ("exc", "exclusion")):
        for item in cohort.get(key, []):
            kind, spec = next(iter(item.items()))
            if side == "inc" and kind == "age":
                values.update(age_min=s(spec.get("min")), age_max=s(spec.get("max")))
            elif side == "inc" and kind == "sex":
                values["sex"] = spec
            elif side == "inc" and kind == "observation_period":
                values["prior_days"] = s(spec.get("min_prior_observation_days", 0))
            elif kind in EVENT_KINDS and used[side] < ROWS and len(spec.get("value") or {}) < 2:
                p = f"{side}{used[side]}"
                used[side] += 1
                start, end = spec.get("window") or (None, None)
                op, number = next(iter((spec.get("value") or {"": None}).items()))
                values.update({f"{p}_kind": kind, f"{p}_codes": ", ".join(spec.get("codes", [])),
                               f"{p}_start": s(start), f"{p}_end": s(end), f"{p}_op": op,
                               f"{p}_min": s((spec.get("occurrences") or {}).get("min")),
                               f"{p}_value": s(number)})
                skipped |= bool(spec.get("concepts"))
            else:
                skipped = True
    return values, skipped


# --- pages ---------------------------------------------------------------------------------

def _fragment(viewer: Viewer, template: str, **context: Any) -> str:
    return TEMPLATES.env.get_template(template).render(
        viewer=viewer, _=viewer.t, t=viewer.t, lang=viewer.t.lang, prefix=PREFIX, **context)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _form(request: Request, viewer: Viewer, values: Values, chosen: list[str],
          errors: Mapping[str, str] | None = None, code: int = 200, **extra: Any) -> Response:
    hub = get_hub(request)
    with hub.sessions() as session:
        rows = node_service.list_nodes(session, limit=500, offset=0)
    return render(request, viewer, "builder.html", status_code=code,
                  title=viewer.t("New study"), values=values, chosen=chosen, nodes=rows,
                  errors=errors or {}, labels={k: label(k, viewer.t) for k in errors or {}},
                  analyses=ANALYSES, fields={n: params_of(n) for n in ANALYSES},
                  labels_of=PARAM_LABELS, hints=HINTS, examples=example_datasets(),
                  tables=[n for n in ANALYSES if registry.get(n).uses_table],
                  cohortless=[n for n in ANALYSES if not uses_cohort(registry.get(n))],
                  purposes=studies.PURPOSES, kinds=EVENT_KINDS, ops=OPS, rows=range(ROWS),
                  **extra)


@router.get("/studies/new", response_class=HTMLResponse)
def new_study(request: Request, from_: int | None = Query(None, alias="from"),
              viewer: Viewer = Depends(page(*BUILDERS))) -> Response:
    if from_ is None:
        return _form(request, viewer, defaults(), [])
    hub = get_hub(request)
    assert viewer.principal is not None
    try:
        with hub.sessions() as session:
            view = studies.get_study(session, hub.clock, viewer.principal, from_)
    except HealthspaceError as exc:
        return render(request, viewer, "error.html", status_code=exc.status_code,
                      title=viewer.t("New study"), message=exc.message)
    values, skipped = values_from_study(view)
    notice = viewer.t("Started from study {id}.", id=from_) + (" " + viewer.t(
        "Parts of its cohort do not fit this form and were left out.") if skipped else "")
    return _form(request, viewer, values, view.nodes, notice=notice)


@router.post("/studies/new", response_class=HTMLResponse)
async def build(request: Request, viewer: Viewer = Depends(page(*BUILDERS))) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "nodes"}
    chosen = [n for n in form.getlist("nodes") if isinstance(n, str)]
    return await run_in_threadpool(_act, request, viewer, values, chosen)


def _act(request: Request, viewer: Viewer, values: Values, chosen: list[str]) -> Response:
    check_csrf(viewer, values.get("csrf"))
    action = values.get("action", "submit")
    hub, principal, code = get_hub(request), viewer.principal, 422
    assert principal is not None
    spec, errors = spec_from(values, chosen, viewer.t, preview=action == "preview")
    if spec is not None:
        try:
            with hub.sessions() as session:
                if action == "check":
                    checked = studies.check(session, hub.clock, principal, spec)
                    decisions = {n: d.model_dump(mode="json") for n, d in checked.nodes.items()}
                    if not _wants_json(request):
                        return _form(request, viewer, values, chosen, decisions=decisions)
                    return JSONResponse({"ok": True, "html": _fragment(
                        viewer, "builder_check.html", decisions=decisions)})
                view, woken = studies.submit(session, hub.clock, hub.settings, principal, spec)
        except HealthspaceError as exc:
            key = _key(exc.field, spec.analysis, values.get("dataset_choice") == "custom")
            errors, code = {key: str(exc)}, exc.status_code
        else:
            hub.notifier.notify(*(node_topic(n) for n in woken))
            if action != "preview":
                return RedirectResponse(f"{PREFIX}/studies/{view.id}", status_code=303)
            if _wants_json(request):
                return JSONResponse({"ok": True, **_preview_json(viewer, view)}, 201)
            return RedirectResponse(f"{PREFIX}/studies/new/preview/{view.id}", status_code=303)
    errors = {k: _ESCAPES.sub("", v) for k, v in errors.items()}  # formulaic colours its own
    if _wants_json(request):
        return JSONResponse({"ok": False, "errors": errors}, status_code=code)
    return _form(request, viewer, values, chosen, errors, code=code)


def _preview(hub: HubState, viewer: Viewer, study_id: int) -> StudyView:
    assert viewer.principal is not None
    with hub.sessions() as session:
        view = studies.get_study(session, hub.clock, viewer.principal, study_id)
    if view.result is not None:  # a released (obfuscated) count read is on the record too
        hub.audit.record(viewer.principal.name, "study.result_access", f"study:{study_id}",
                         {"status": str(view.status), "via": "console builder"})
    return view


def _preview_ctx(view: StudyView) -> dict[str, Any]:
    """What builder_preview.html shows: the study, each node's last task, rate-limited nodes."""
    limited = sorted(node for node, d in view.decisions.items()
                     if any(r.get("code") == "rate_limited" for r in d.get("reasons", [])))
    return {"study": view, "tasks": {task.node: task for task in view.tasks},
            "limited": limited}


def _preview_json(viewer: Viewer, view: StudyView, level: int = 3) -> dict[str, Any]:
    return {"id": view.id, "status": str(view.status), "terminal": view.status.terminal,
            "status_url": f"{PREFIX}/studies/new/preview/{view.id}/status?level={level}",
            "html": _fragment(viewer, "builder_preview.html", level=level,
                              **_preview_ctx(view))}


@router.get("/studies/new/preview/{study_id}", response_class=HTMLResponse)
def preview_page(study_id: int, request: Request,
                 viewer: Viewer = Depends(page(*BUILDERS))) -> Response:
    try:
        view = _preview(get_hub(request), viewer, study_id)
    except HealthspaceError as exc:
        return render(request, viewer, "error.html", status_code=exc.status_code,
                      title=viewer.t("Feasibility preview"), message=exc.message)
    return render(request, viewer, "builder_result.html", **_preview_ctx(view),
                  title=viewer.t("Feasibility preview #{id}", id=study_id),
                  cohort_json=json.dumps(view.cohort, indent=2, ensure_ascii=False))


@router.get("/studies/new/preview/{study_id}/status")
def preview_status(study_id: int, request: Request, level: int = Query(3, ge=2, le=3),
                   viewer: Viewer = Depends(page(*BUILDERS))) -> JSONResponse:
    try:
        view = _preview(get_hub(request), viewer, study_id)
    except HealthspaceError as exc:
        return JSONResponse({"ok": False, "message": exc.message}, exc.status_code)
    return JSONResponse({"ok": True, **_preview_json(viewer, view, level)})


@router.get("/studies/new/codes")
def code_search(request: Request, q: str = Query("", max_length=100),
                vocab: str = Query("", max_length=40), node: list[str] = Query([]),
                viewer: Viewer = Depends(page(*BUILDERS))) -> JSONResponse:
    """Codes the nodes published (``Catalog.vocabularies``) starting with ``q``."""
    q = q.strip().rstrip("%")
    if ":" in q and not vocab:
        vocab, q = q.split(":", 1)
    found: dict[tuple[str, str], set[str]] = {}
    if q or vocab:
        with get_hub(request).sessions() as session:
            rows = node_service.list_nodes(session, limit=500, offset=0)
        for row in rows:
            published = row.catalog.vocabularies if row.catalog else {}
            for vid, codes in published.items() if not node or row.name in node else ():
                if vocab and vid.lower() != vocab.strip().lower():
                    continue
                for code in codes:
                    if code.lower().startswith(q.lower()):
                        found.setdefault((vid, code), set()).add(row.name)
    hits = sorted(found)[:CODE_HITS]
    return JSONResponse({"query": q, "vocabulary": vocab or None,
                         "truncated": len(found) > CODE_HITS,
                         "codes": [{"code": f"{v}:{c}", "vocabulary": v, "concept_code": c,
                                    "nodes": sorted(found[v, c])} for v, c in hits]})
