"""Grouping rule files (CHS-DRG style MDC → ADRG → severity, and DIP): validated models.

Codes in a rule are matched against a case's ICD-10 diagnosis or procedure codes in one of
four forms: an exact code (``I50.9``), a category prefix (``I50`` matches ``I50`` and
``I50.x``), an SQL-style wildcard (``027%``) or a range of three-character categories
(``J00-J99``, inclusive).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from healthspace.core.documents import load_document
from healthspace.core.errors import InvalidInput, field_path

SAMPLE = Path(__file__).parent / "rules" / "chs_drg_sample.yaml"
M = TypeVar("M", bound=BaseModel)
_RANGE = re.compile(r"^([A-Z][0-9]{2})-([A-Z][0-9]{2})$")
_CODE = re.compile(r"^[A-Z0-9][A-Z0-9.]{1,9}%?$")


def _category(code: str) -> str:
    return code.split(".")[0][:3]


class CodeSet:
    """A set of code patterns; ``matches(code)`` is True if any pattern matches."""

    def __init__(self, patterns: list[str]) -> None:
        self.exact: set[str] = set()
        self.prefixes: list[str] = []
        self.ranges: list[tuple[str, str]] = []
        for pattern in patterns:
            if (found := _RANGE.match(pattern)) is not None:
                self.ranges.append((found.group(1), found.group(2)))
            elif pattern.endswith("%"):
                self.prefixes.append(pattern[:-1])
            elif "." not in pattern and len(pattern) == 3:
                self.prefixes.append(pattern)  # a category: the code itself or any child
            else:
                self.exact.add(pattern)

    def matches(self, code: str | None) -> bool:
        if not code:
            return False
        if code in self.exact or any(code.startswith(p) for p in self.prefixes):
            return True
        category = _category(code)
        return any(lo <= category <= hi for lo, hi in self.ranges)


def _patterns(value: list[str]) -> list[str]:
    for pattern in value:
        if not (_RANGE.match(pattern) or _CODE.match(pattern)):
            raise ValueError(f"{pattern!r} is not a code, a category, a code% pattern or a "
                             "range like J00-J99")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mdc(_Strict):
    code: str = Field(pattern=r"^[A-Z0-9]{2,8}$")
    title: str
    diagnoses: list[str] = Field(min_length=1)

    _check = field_validator("diagnoses")(_patterns)


class Adrg(_Strict):
    code: str = Field(pattern=r"^[A-Z0-9]{2,6}$")
    mdc: str
    kind: Literal["surgical", "interventional", "medical"]
    title: str
    diagnoses: list[str] = Field(default_factory=list, description="principal diagnosis")
    procedures: list[str] = Field(default_factory=list, description="any of the case's")
    split: bool = Field(default=True, description="split by severity (suffix 1/3/5) or not (9)")

    _check = field_validator("diagnoses", "procedures")(_patterns)


class Severity(_Strict):
    mcc: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    exclude_same_category: bool = True

    _check = field_validator("mcc", "cc")(_patterns)


class Dip(_Strict):
    diagnosis_characters: int = Field(default=5, ge=3, le=7)
    procedures: list[str] = Field(default_factory=list)

    _check = field_validator("procedures")(_patterns)


class GroupingRules(_Strict):
    """One rule file; ``official: false`` marks a sample that no payer should pay by."""

    name: str
    version: str
    official: bool = False
    mdc: list[Mdc] = Field(min_length=1)
    adrg: list[Adrg] = Field(min_length=1)
    severity: Severity = Field(default_factory=Severity)
    dip: Dip = Field(default_factory=Dip)

    @field_validator("adrg")
    @classmethod
    def _known(cls, value: list[Adrg], info: Any) -> list[Adrg]:
        mdcs = {m.code for m in info.data.get("mdc", [])}
        codes = [a.code for a in value]
        for i, adrg in enumerate(value):
            if adrg.mdc not in mdcs:
                raise ValueError(f"adrg {adrg.code} (item {i}) names unknown mdc {adrg.mdc!r}")
            if not adrg.diagnoses and not adrg.procedures:
                raise ValueError(f"adrg {adrg.code} needs diagnoses or procedures")
        if len(set(codes)) != len(codes):
            raise ValueError("adrg codes must be unique")
        return value

    @cached_property
    def sets(self) -> dict[str, CodeSet]:
        """Compiled code sets, keyed ``mdc:CODE``, ``dx:ADRG``, ``px:ADRG``, ``mcc``, ``cc``,
        ``dip``."""
        out = {f"mdc:{m.code}": CodeSet(m.diagnoses) for m in self.mdc}
        for a in self.adrg:
            out[f"dx:{a.code}"] = CodeSet(a.diagnoses)
            out[f"px:{a.code}"] = CodeSet(a.procedures)
        out["mcc"] = CodeSet(self.severity.mcc)
        out["cc"] = CodeSet(self.severity.cc)
        out["dip"] = CodeSet(self.dip.procedures)
        return out

    def drg_codes(self) -> list[str]:
        """Every DRG this rule file can give, in rule order, then the ungroupable ``QY``."""
        codes: list[str] = []
        for a in self.adrg:
            codes += [f"{a.code}{s}" for s in ("1", "3", "5")] if a.split else [f"{a.code}9"]
        return [*codes, "QY"]


def load_rule_file(raw: Any, model: type[M], sample: Path, field: str, what: str) -> M:
    """A rule file as ``model`` — a path, YAML/JSON text or dict; None: ``sample`` — with
    errors naming the field under ``field``."""
    if isinstance(raw, model):
        return raw
    data = raw if isinstance(raw, dict) else load_document(sample if raw is None else raw,
                                                           field)
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be an object", field=field)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise InvalidInput(first["msg"], field=field_path(list(first["loc"]), (field,))) \
            from exc


def load_rules(raw: Any = None) -> GroupingRules:
    """A rule file (path, YAML/JSON text or dict; default: the shipped sample); errors name
    the field under ``rules``."""
    return load_rule_file(raw, GroupingRules, SAMPLE, "rules", "a grouping rule file")
