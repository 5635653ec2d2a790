"""Declarative mappings from a hospital's own export tables to the CDM (docs/mapping.md).

A mapping (YAML) names the source files, optional code maps (local code lists → standard
codes), and for each CDM table the source it is built from, an optional join to another
source on a key, a row filter and one rule per CDM column. The model is validated by
pydantic; every error names the mapping's line and, where it applies, the source column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from healthspace.cdm.schema import TABLES
from healthspace.core.errors import InvalidInput, field_path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Model):
    file: str = Field(min_length=1)
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: Literal["utf-8", "gbk", "gb18030", "latin-1"] = "utf-8"


class CodeMapSpec(_Model):
    """A CSV of local code → standard code, and the standard codes' vocabulary."""

    file: str = Field(min_length=1)
    source: str = Field(default="local_code", alias="from")
    target: str = Field(default="code", alias="to")
    vocabulary: str = Field(min_length=1)


class ColumnRule(_Model):
    """How one CDM column is filled: exactly one of column, constant or row_number."""

    column: str | None = None
    constant: str | int | float | None = None
    row_number: bool = False
    type: Literal["id", "text", "number"] | None = Field(
        default=None, description="id: integers kept, other keys hashed to a stable integer")
    date_format: str | None = Field(default=None, description="strptime format, e.g. %Y%m%d")
    part: Literal["year", "month", "day"] | None = None
    values: dict[str, int | str | float] | None = Field(
        default=None, description="source value -> target value (e.g. local sex codes)")
    default: int | str | float | None = Field(
        default=None, description="for values not in 'values' (else NULL)")
    code_system: str | None = Field(
        default=None, description="the column holds codes of this vocabulary: the concept id")
    code_map: str | None = Field(
        default=None, description="a code map: the local code's standard code's concept id")

    @model_validator(mode="after")
    def _one_source(self) -> ColumnRule:
        given = sum([self.column is not None, self.constant is not None, self.row_number])
        if given != 1:
            raise ValueError("give exactly one of column, constant or row_number")
        if (self.code_system or self.code_map) and self.column is None:
            raise ValueError("code_system and code_map apply to a source column")
        if self.code_system and self.code_map:
            raise ValueError("give code_system or code_map, not both")
        if self.part and not self.date_format:
            raise ValueError("part needs date_format")
        return self


class JoinSpec(_Model):
    source: str
    key: str = Field(description="the key column, named the same in both sources")
    columns: list[str] = Field(min_length=1, description="columns taken from the joined source")


class FilterSpec(_Model):
    column: str
    equals: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    not_in: list[str] | None = None
    not_empty: bool = False

    @model_validator(mode="after")
    def _one_test(self) -> FilterSpec:
        if sum([self.equals is not None, self.in_ is not None, self.not_in is not None,
                self.not_empty]) != 1:
            raise ValueError("give exactly one of equals, in, not_in or not_empty")
        return self


class TableRule(_Model):
    source: str = Field(alias="from")
    join: JoinSpec | None = None
    filter: list[FilterSpec] = Field(default_factory=list)
    columns: dict[str, ColumnRule]


class Mapping(_Model):
    version: Literal[1] = 1
    sources: dict[str, SourceSpec] = Field(min_length=1)
    code_maps: dict[str, CodeMapSpec] = Field(default_factory=dict)
    tables: dict[str, TableRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Mapping:
        for table, rule in self.tables.items():
            if table not in TABLES:
                raise ValueError(f"tables.{table}: not a table of the CDM subset")
            known = {c.name for c in TABLES[table]}
            for name in rule.columns:
                if name not in known:
                    raise ValueError(f"tables.{table}.columns.{name}: not a column of {table}")
            missing = [c.name for c in TABLES[table] if c.required and c.name not in rule.columns]
            if missing:
                raise ValueError(f"tables.{table}: required column(s) {', '.join(missing)} "
                                 "have no rule")
            for where, source in (("from", rule.source),
                                  ("join.source", rule.join.source if rule.join else None)):
                if source is not None and source not in self.sources:
                    raise ValueError(f"tables.{table}.{where}: unknown source {source!r}")
            for name, col in rule.columns.items():
                if col.code_map and col.code_map not in self.code_maps:
                    raise ValueError(f"tables.{table}.columns.{name}.code_map: unknown code "
                                     f"map {col.code_map!r}")
        return self


def _lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The line (1-based) of every key path in a YAML document."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out.update(_lines(value, (*path, str(key.value))))
            out[(*path, str(key.value))] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_lines(item, (*path, str(i))))
    return out


class LoadedMapping:
    """A validated mapping, where it came from, and the line of every key (for errors)."""

    def __init__(self, mapping: Mapping, path: Path, lines: dict[tuple[str, ...], int]) -> None:
        self.mapping, self.path, self.lines = mapping, path, lines

    def line(self, *keys: str) -> int:
        for n in range(len(keys), -1, -1):
            if keys[:n] in self.lines:
                return self.lines[keys[:n]]
        return 1

    def error(self, message: str, *keys: str) -> InvalidInput:
        where = ".".join(keys)
        return InvalidInput(f"{self.path.name} line {self.line(*keys)} ({where}): {message}",
                            field="mapping")


def load_mapping(path: Path) -> LoadedMapping:
    """Parse and validate a mapping file; errors name its line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"mapping file {path} does not exist", field="mapping")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{path.name}{at}: not valid YAML: {exc}", field="mapping") from exc
    lines = _lines(node) if node is not None else {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path.name}: a mapping is a YAML object", field="mapping")
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        keys = tuple(str(k) for k in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if not keys and "tables." in message:  # a cross-reference error names its own path
            keys = tuple(message.split(":", 1)[0].split("."))
        line = LoadedMapping(Mapping.model_construct(), path, lines).line(*keys)
        raise InvalidInput(f"{path.name} line {line} ({field_path(keys) or 'mapping'}): "
                           f"{message}", field="mapping") from exc
    return LoadedMapping(mapping, path, lines)
