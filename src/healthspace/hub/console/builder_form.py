"""The study builder's form, read into what the API takes: a cohort definition, an analysis'
parameters, an analysis dataset and a study spec — each validated by the models the API
validates with, every problem kept against the form field it belongs to."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from healthspace.analyses import registry
from healthspace.analyses.base import Analysis
from healthspace.cohort.dataset import load_dataset
from healthspace.cohort.models import EVENT_KINDS, CohortDefinition
from healthspace.core.documents import parse_text
from healthspace.core.errors import InvalidInput, field_path
from healthspace.core.models import StudySpec, StudyView

ROWS = 4  # inclusion rows, and exclusion rows, on the form
GROUPS = tuple(string.ascii_uppercase[:ROWS // 2])  # either-or groups among inclusion rows
OPS = ("gt", "gte", "lt", "lte", "eq")
Values = dict[str, str]


@dataclass(frozen=True)
class Param:
    """One parameter field; ``kind`` (text, list, number, bool, choice, node), ``choices`` and
    ``default`` (as form text) come from the analysis' own ``params_model``; ``advanced``
    fields sit under "More settings"."""

    key: str
    name: str
    kind: str
    choices: tuple[str, ...]
    default: str
    advanced: bool = False


@dataclass(frozen=True)
class Offer:
    """An analysis on the form: its label, the parameters shown, those under "More settings",
    and a hint when it does not read the cohort."""

    label: str
    params: tuple[str, ...] = ()
    advanced: tuple[str, ...] = ()
    cohortless: str = ""


CLAIMS_ONLY = "Reads the node's settlement claims; the cohort above is not used."
ANALYSES: dict[str, Offer] = {
    "cohort_count": Offer("Cohort counts (feasibility)", ("breakdown", "obfuscate", "dp_epsilon"),
                          ("distinct", "distinct_precision")),
    "summary": Offer("Descriptive statistics", ("variables", "categorical", "by"),
                     ("quantiles",)),
    "glm": Offer("Generalised linear model", ("formula", "family", "offset"),
                 ("weights", "max_iter", "tol")),
    "km": Offer("Kaplan–Meier survival", ("duration", "event", "group")),
    "cox": Offer("Cox proportional hazards", ("duration", "event", "covariates", "ties"),
                 ("strata_by_site", "max_iter", "tol")),
    "fl_train": Offer("Federated learning (training)", (
        "target", "features", "model", "strategy", "rounds", "local_epochs", "learning_rate"),
        ("hidden", "mu", "batch_size", "fraction", "min_nodes", "patience", "min_delta",
         "holdout", "seed", "calibration_bins", "dp_epsilon", "dp_delta", "dp_clip",
         "model_name", "intended_use")),
    "score": Offer("Score with a registered model", ("model_id", "bins")),
    "drug_value": Offer("Drug value (cost and outcome by arm)", (
        "arm", "treatment", "comparator", "duration", "event", "cost", "covariates"),
        ("horizon_days", "alpha", "ties", "max_iter", "currency")),
    "pv": Offer("Pharmacovigilance signals (PRR, ROR)", ("drugs", "events", "window_days"),
                ("drug_level", "event_level"),
                cohortless="Reads every person's drug and condition records; the cohort "
                           "above is not used."),
    "casemix": Offer("Case mix (DRG)", cohortless=CLAIMS_ONLY),
    "drg_weights": Offer("DRG relative weights", ("trim", "iqr_factor"), ("charge_bins",),
                         cohortless=CLAIMS_ONLY),
    "fraud_screen": Offer("Fund-fraud screening", ("readmit_days",), cohortless=CLAIMS_ONLY),
    "evidence_check": Offer("Evidence check against hospital records",
                            ("payer", "readmit_days", "readmissions"), cohortless=CLAIMS_ONLY),
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
    "readmissions": "Also check split admissions",
    "distinct": "Distinct persons across nodes (HyperLogLog)",
    "distinct_precision": "HyperLogLog precision", "quantiles": "Quantiles",
    "weights": "Weights column", "max_iter": "Maximum iterations", "tol": "Tolerance",
    "strata_by_site": "Stratify the baseline hazard by node", "hidden": "Hidden layers",
    "mu": "FedProx μ", "batch_size": "Batch size", "fraction": "Fraction of nodes per round",
    "min_nodes": "Minimum nodes per round", "patience": "Early-stopping patience (rounds)",
    "min_delta": "Early-stopping minimum improvement", "holdout": "Validation holdout",
    "seed": "Random seed", "calibration_bins": "Calibration bins", "dp_delta": "DP δ",
    "dp_clip": "DP clipping norm", "model_name": "Model name (registry)",
    "intended_use": "Intended use (model card)", "model_id": "Model id", "bins": "Risk bins",
    "arm": "Arm column", "treatment": "Treatment arm value", "comparator": "Comparator arm value",
    "cost": "Cost column", "horizon_days": "Horizon (days)", "alpha": "Significance level α",
    "currency": "Currency", "drugs": "Drugs (codes or prefixes)",
    "events": "Events (codes or prefixes)", "window_days": "Report window (days)",
    "drug_level": "Drug code length", "event_level": "Event code length",
    "charge_bins": "Charge histogram bins"}
HINTS = {"dp_epsilon": "Empty: exact counts, small ones suppressed.",
         "formula": "For example: event ~ age + male + drug",
         "hidden": "Units per hidden layer, separated by commas: 16, 8.",
         "quantiles": "Between 0 and 1, separated by commas: 0.25, 0.5, 0.75.",
         "drugs": "Empty: every drug. Separated by commas.",
         "events": "Empty: every event. Separated by commas.",
         **dict.fromkeys(("variables", "covariates", "features", "categorical"),
                         "Column names, separated by commas.")}
NODE_PARAMS = frozenset({"payer"})  # a parameter naming one of the nodes
# parameters naming one column of the analysis dataset: the form suggests its columns
COLUMN_PARAMS = frozenset({"duration", "event", "group", "target", "offset", "weights", "arm",
                           "cost"})
STATIC_LABELS = {
    "entry_kind": "Entry event", "entry_codes": "Entry codes", "age_min": "Age from",
    "age_max": "Age to", "sex": "Sex", "prior_days": "Prior observation (days)",
    "nodes": "Target nodes", "purpose": "Purpose", "title": "Title", "analysis": "Analysis",
    "dataset_choice": "Analysis dataset", "dataset_text": "Dataset spec (YAML or JSON)",
    "secure_aggregation": "Secure aggregation",
    "round_timeout": "Drop a node that has not answered a round after (seconds)",
    "form": "Form"}
ROW_LABELS = {"kind": "Looks for", "codes": "Codes", "start": "From day", "end": "To day",
              "min": "At least (times)", "op": "Value", "value": "Value",
              "group": "Either-or group"}
_ROW_PART = {"codes": "codes", "concepts": "codes", "window": "start", "occurrences": "min",
             "value": "value"}
_CONCEPT = re.compile(r"\d{1,19}")  # an OMOP concept id; codes are VOCAB:CODE


def uses_cohort(impl: Analysis) -> bool:
    return impl.requires_cohort or impl.uses_table


def _kind(param: str, annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if param in NODE_PARAMS:
        return "node"
    if annotation is bool:
        return "bool"
    if origin is Literal:
        return "choice"
    if origin is list:
        return "list"
    return "number" if {int, float} & set(args or (annotation,)) else "text"


@cache
def params_of(name: str) -> tuple[Param, ...]:
    fields = registry.get(name).params_model.model_fields
    offer, out = ANALYSES[name], []
    for param in (*offer.params, *offer.advanced):
        info = fields[param]
        kind = _kind(param, info.annotation)
        default = info.default
        if kind == "bool":
            text = "on" if default else ""
        elif kind == "list" and isinstance(default, list):
            text = ", ".join(map(str, default))
        elif isinstance(default, str | int | float):
            text = str(default)
        else:
            text = ""
        choices = tuple(map(str, get_args(info.annotation))) if kind == "choice" else ()
        out.append(Param(f"{name}.{param}", param, kind, choices, text,
                         advanced=param in offer.advanced))
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
        return f"{t(ANALYSES[name].label)} · {t(PARAM_LABELS[param])}"
    return key


# --- the form -> a cohort ----------------------------------------------------------------

def _terms(text: str) -> dict[str, list[Any]]:
    """Codes (VOCAB:CODE) and OMOP concept ids (whole numbers) from one field."""
    tokens = [c for c in re.split(r"[\s,;]+", text) if c]
    concepts = [int(c) for c in tokens if _CONCEPT.fullmatch(c)]
    codes = [c for c in tokens if not _CONCEPT.fullmatch(c)]
    return {k: v for k, v in (("codes", codes), ("concepts", concepts)) if v}


def terms_text(spec: Mapping[str, Any]) -> str:
    return ", ".join([*spec.get("codes", []), *map(str, spec.get("concepts", []))])


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
    kind, terms = r.text(f"{prefix}_kind"), _terms(r.text(f"{prefix}_codes"))
    start, end = r.number(f"{prefix}_start"), r.number(f"{prefix}_end")
    least, op = r.number(f"{prefix}_min"), r.text(f"{prefix}_op")
    value = r.number(f"{prefix}_value", whole=False)
    if not (kind or terms or start is not None or end is not None or least or op
            or value is not None):
        if r.text(f"{prefix}_group"):
            r.errors[f"{prefix}_group"] = r.t("This row is empty: leave its group blank.")
        return None
    if not kind:
        r.errors[f"{prefix}_kind"] = r.t("Choose what the criterion looks for.")
        return None
    spec: dict[str, Any] = dict(terms)  # none: the cohort model names what is missing
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


# Where each cohort list item came from: a form field (or row prefix), or for an either-or
# group the prefixes of its rows.
Where = dict[str, list[str | list[str]]]


def _locate(loc: tuple[Any, ...], where: Where) -> str:
    """The form field behind a cohort model error's location."""
    if not loc or loc[0] not in where or len(loc) < 2 or not isinstance(loc[1], int) \
            or loc[1] >= len(where[str(loc[0])]):
        return "entry_codes" if len(loc) > 1 and loc[1] in EVENT_KINDS else "entry_kind"
    prefix = where[str(loc[0])][loc[1]]
    rest = loc[2:]
    if isinstance(prefix, list):  # an either-or group: ("any", j, kind, ...)
        if len(rest) < 2 or not isinstance(rest[1], int) or rest[1] >= len(prefix):
            return f"{prefix[0]}_group"
        prefix, rest = prefix[rest[1]], rest[2:]
    if not prefix.startswith(("inc", "exc")):
        return "age_max" if prefix == "age_min" and "max" in loc else prefix
    if not rest or rest[0] not in EVENT_KINDS:
        return f"{prefix}_kind"
    return f"{prefix}_{_ROW_PART.get(str(rest[1]), 'codes') if len(rest) > 1 else 'codes'}"


def _rows(r: _Reader, side: str, key: str, items: list[dict[str, Any]], where: Where) -> None:
    """The side's criterion rows into ``items``; rows sharing a group letter become one
    either-or (``any``) criterion, placed where its first row is."""
    groups: dict[str, tuple[int, list[str]]] = {}
    for i in range(ROWS):
        prefix = f"{side}{i}"
        if (found := _criterion(r, prefix)) is None:
            continue
        group = r.text(f"{prefix}_group") if side == "inc" else ""
        if group and group not in GROUPS:
            r.errors[f"{prefix}_group"] = r.t("Choose a group from the list.")
            continue
        if not group:
            items.append(found)
            where[key].append(prefix)
        elif group in groups:
            at, prefixes = groups[group]
            items[at]["any"].append(found)
            prefixes.append(prefix)
        else:
            groups[group] = (len(items), [prefix])
            items.append({"any": [found]})
            where[key].append(groups[group][1])
    for _group, (_at, prefixes) in groups.items():
        if len(prefixes) < 2:
            r.errors[f"{prefixes[0]}_group"] = r.t(
                "An either-or group needs at least two rows with the same letter.")


def cohort_from(values: Values, t: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The cohort definition the form describes (None if left empty), and its problems."""
    r = _Reader(values, t)
    where: Where = {"inclusion": [], "exclusion": []}
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
        _rows(r, side, key, lists[key], where)
    terms = _terms(r.text("entry_codes"))
    if not terms and not inclusion and not lists["exclusion"] and not r.errors:
        return None, {}
    cohort: dict[str, Any] = {"entry": {r.text("entry_kind"): terms or {"codes": []}}}
    cohort.update({k: v for k, v in lists.items() if v})
    try:
        CohortDefinition.model_validate(cohort)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            r.errors.setdefault(_locate(tuple(e["loc"]), where),
                                f"{field_path(e['loc'], ('cohort',))}: {e['msg']}")
    return (None if r.errors else cohort), r.errors


# --- parameters, dataset, the study ------------------------------------------------------

def params_from(name: str, values: Values) -> tuple[dict[str, Any], dict[str, str]]:
    """The analysis' parameters, validated by its own ``params_model`` and ``parse_params``;
    a field left at its default is not sent, so the analysis' own default applies."""
    raw: dict[str, Any] = {}
    for p in params_of(name):
        value = values.get(p.key, "").strip()
        if p.kind == "bool":
            raw[p.name] = bool(value)
        elif p.advanced and value == p.default:
            continue
        elif p.kind == "list" and value:
            raw[p.name] = [v.strip() for v in value.split(",") if v.strip()]
        elif value and p.kind != "list":
            raw[p.name] = value
    impl = registry.get(name)
    try:
        typed = impl.params_model.model_validate(raw).model_dump(mode="json")
        impl.parse_params(raw)
    except ValidationError as exc:
        return raw, _problems(exc, ("params",), name)
    except InvalidInput as exc:
        return raw, {_key(exc.field, name): str(exc)}
    return {k: typed[k] for k in raw}, {}  # as the analysis reads them: numbers as numbers


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


def field_key(field: str | None, analysis: str, custom: bool = False) -> str:
    """The form field a service error's ``field`` names."""
    parts = re.split(r"[.\[]", field or "")
    if parts[0] == "params":
        shown = ANALYSES[analysis] if analysis in ANALYSES else Offer("")
        known = (*shown.params, *shown.advanced)
        return f"{analysis}.{parts[1]}" if parts[1:] and parts[1] in known else "analysis"
    if parts[0] == "dataset":
        return "dataset_text" if custom else "dataset_choice"
    if parts[0] == "cohort":
        return "entry_codes"
    if parts[0] == "round_timeout_seconds":
        return "round_timeout"
    return parts[0] if parts[0] in STATIC_LABELS else "form"


_key = field_key


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
    r = _Reader(values, t)
    timeout = None if preview else r.number("round_timeout")
    errors.update(r.errors)
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
                         title=values.get("title", "").strip() or None, preview=preview,
                         secure_aggregation=bool(values.get("secure_aggregation"))
                         and not preview, round_timeout_seconds=timeout), {}
    except ValidationError as exc:
        return None, _problems(exc, (), name)


# --- a stored study -> the form ----------------------------------------------------------

def _row(values: Values, prefix: str, kind: str, spec: Mapping[str, Any]) -> None:
    def s(v: Any) -> str:
        return "" if v is None else str(v)

    start, end = spec.get("window") or (None, None)
    op, number = next(iter((spec.get("value") or {"": None}).items()))
    values.update({f"{prefix}_kind": kind, f"{prefix}_codes": terms_text(spec),
                   f"{prefix}_start": s(start), f"{prefix}_end": s(end), f"{prefix}_op": op,
                   f"{prefix}_min": s((spec.get("occurrences") or {}).get("min")),
                   f"{prefix}_value": s(number)})


def _fits(item: Mapping[str, Any]) -> bool:
    """An event criterion one form row can hold."""
    kind, spec = next(iter(item.items()))
    return kind in EVENT_KINDS and len(spec.get("value") or {}) < 2


def values_from_study(view: StudyView) -> tuple[Values, bool]:
    """Form values for a stored study's cohort, analysis and options; True if part of the
    cohort does not fit the form."""
    def s(v: Any) -> str:
        return "" if v is None else str(v)

    values = {**defaults(), "purpose": view.purpose, "title": s(view.title)}
    if view.analysis in ANALYSES and not view.preview:
        values["analysis"] = view.analysis
        for p in params_of(view.analysis):
            if p.name in view.params:
                given = view.params[p.name]
                values[p.key] = ("on" if given else "") if p.kind == "bool" else \
                    ", ".join(map(str, given)) if isinstance(given, list) else s(given)
    values["secure_aggregation"] = "on" if view.secure_aggregation else ""
    values["round_timeout"] = s(view.round_timeout_seconds)
    cohort, skipped, used = view.cohort or {}, False, {"inc": 0, "exc": 0}
    for kind, spec in (cohort.get("entry") or {}).items():
        values.update(entry_kind=kind, entry_codes=terms_text(spec))
        skipped |= bool(spec.get("value"))
    letters = iter(GROUPS)
    for side, key in (("inc", "inclusion"), ("exc", "exclusion")):
        for item in cohort.get(key, []):
            kind, spec = next(iter(item.items()))
            if side == "inc" and kind == "age":
                values.update(age_min=s(spec.get("min")), age_max=s(spec.get("max")))
            elif side == "inc" and kind == "sex":
                values["sex"] = spec
            elif side == "inc" and kind == "observation_period":
                values["prior_days"] = s(spec.get("min_prior_observation_days", 0))
            elif _fits(item) and used[side] < ROWS:
                _row(values, f"{side}{used[side]}", kind, spec)
                used[side] += 1
            elif side == "inc" and kind == "any" and len(spec) >= 2 and all(map(_fits, spec)) \
                    and used[side] + len(spec) <= ROWS and (letter := next(letters, None)):
                for member in spec:
                    prefix = f"{side}{used[side]}"
                    _row(values, prefix, *next(iter(member.items())))
                    values[f"{prefix}_group"] = letter
                    used[side] += 1
            else:
                skipped = True
    return values, skipped
