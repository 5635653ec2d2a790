"""Mapped-CSV import: a hospital's own export tables → CDM CSV files, by a declarative mapping.

Each CDM table of the mapping becomes one DuckDB query over the source files (read as text),
written as ``<table>.csv`` for the ordinary CDM ingest to validate and load. Codes declared
with a vocabulary (directly or through a code map) get the same site-local concept ids as FHIR
imports (``healthspace.cdm.fhir.concept_id``) and a ``concept.csv`` row each, so ``VOCAB:CODE``
cohort criteria work. Every problem is reported with the mapping's line and the source column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from healthspace.cdm.fhir import CUSTOM_CONCEPT_BASE
from healthspace.cdm.mapping import ColumnRule, LoadedMapping, TableRule


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def concept_sql(vocabulary: str, code: str) -> str:
    """SQL for ``healthspace.cdm.fhir.concept_id(vocabulary, code)``."""
    key = f"{_lit(vocabulary + '|')} || {code}"
    return (f"CASE WHEN {code} IS NULL THEN NULL ELSE {CUSTOM_CONCEPT_BASE} + "
            f"CAST(('0x' || substr(sha256({key}), 1, 12)) AS BIGINT) END")


def id_sql(value: str) -> str:
    """Integers stay; any other key becomes a stable 60-bit integer."""
    return (f"CASE WHEN {value} IS NULL THEN NULL WHEN regexp_full_match({value}, '[0-9]{{1,18}}')"
            f" THEN CAST({value} AS BIGINT) ELSE CAST(('0x' || substr(md5({value}), 1, 15)) "
            "AS BIGINT) END")


@dataclass
class MappedStats:
    sources: dict[str, int] = field(default_factory=dict)  # source -> rows
    rows: dict[str, int] = field(default_factory=dict)  # CDM table -> rows written
    codes: dict[str, int] = field(default_factory=dict)  # vocabulary -> distinct codes


class _Build:
    def __init__(self, con: duckdb.DuckDBPyConnection, loaded: LoadedMapping, src: Path,
                 work: Path) -> None:
        self.con, self.loaded, self.src, self.work = con, loaded, src, work
        self.columns: dict[str, list[str]] = {}
        self.codes: list[tuple[str, str, str]] = []  # (vocabulary, FROM…WHERE sql, code expr)

    def sources(self, stats: MappedStats) -> None:
        m = self.loaded.mapping
        for name, spec in m.sources.items():
            path = self._file(spec.file, "sources", name, "file")
            if spec.encoding not in ("utf-8", "latin-1"):  # DuckDB reads these two natively
                utf8 = self.work / f"{name}.utf8.csv"
                utf8.write_text(path.read_text(encoding=spec.encoding), encoding="utf-8")
                path = utf8
            view = f"src_{name}"
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_q(view)} AS SELECT * FROM read_csv(?, header = "
                f"true, all_varchar = true, delim = ?, encoding = ?)",
                [str(path), spec.delimiter, "latin-1" if spec.encoding == "latin-1" else "utf-8"])
            self.columns[name] = [r[0] for r in self.con.execute(
                f"SELECT column_name FROM (DESCRIBE {_q(view)})").fetchall()]
            stats.sources[name] = int(self.con.execute(
                f"SELECT count(*) FROM {_q(view)}").fetchone()[0])  # type: ignore[index]
        for name, cmap in m.code_maps.items():
            path = self._file(cmap.file, "code_maps", name, "file")
            # One standard code per local code (the first listed), so lookups decorrelate.
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {_q('map_' + name)} AS SELECT "
                             f"DISTINCT ON (src) src, code FROM (SELECT {_q(cmap.source)} AS "
                             f"src, {_q(cmap.target)} AS code FROM read_csv(?, header = true, "
                             "all_varchar = true))", [str(path)])

    def _file(self, name: str, *keys: str) -> Path:
        path = self.src / name
        if not path.is_file():
            raise self.loaded.error(f"source file {name} not found in {self.src}", *keys)
        return path

    def _ref(self, table: str, rule: TableRule, column: str, *keys: str) -> str:
        if rule.join is not None and column in rule.join.columns:
            if column not in self.columns[rule.join.source]:
                raise self.loaded.error(f"source column {column!r} is not in "
                                        f"{rule.join.source}", "tables", table, *keys)
            return f"NULLIF(trim(j.{_q(column)}), '')"
        if column not in self.columns[rule.source]:
            file = self.loaded.mapping.sources[rule.source].file
            raise self.loaded.error(f"source column {column!r} is not in {file} (columns: "
                                    f"{', '.join(self.columns[rule.source])})", "tables", table,
                                    *keys)
        return f"NULLIF(trim(s.{_q(column)}), '')"

    def _from(self, table: str, rule: TableRule) -> str:
        sql = f"FROM {_q('src_' + rule.source)} s"
        if rule.join is not None:
            join = rule.join
            for side in (rule.source, join.source):
                if join.key not in self.columns[side]:
                    raise self.loaded.error(f"join key {join.key!r} is not in {side}", "tables",
                                            table, "join", "key")
            cols = ", ".join(_q(c) for c in dict.fromkeys([join.key, *join.columns]))
            sql += (f" LEFT JOIN (SELECT DISTINCT ON ({_q(join.key)}) {cols} FROM "
                    f"{_q('src_' + join.source)}) j ON j.{_q(join.key)} = s.{_q(join.key)}")
        tests = []
        for i, f in enumerate(rule.filter):
            value = self._ref(table, rule, f.column, "filter", str(i), "column")
            if f.equals is not None:
                tests.append(f"{value} = {_lit(f.equals)}")
            elif f.in_ is not None:
                tests.append(f"{value} IN ({', '.join(_lit(v) for v in f.in_)})")
            elif f.not_in is not None:
                tests.append(f"coalesce({value} NOT IN ({', '.join(_lit(v) for v in f.not_in)}),"
                             " TRUE)")
            else:
                tests.append(f"{value} IS NOT NULL")
        return sql + (f" WHERE {' AND '.join(tests)}" if tests else "")

    def _expr(self, table: str, rule: TableRule, name: str, col: ColumnRule, where: str) -> str:
        keys = ("columns", name)
        if col.row_number:
            return "row_number() OVER ()"
        if col.constant is not None:
            return _lit(col.constant)
        assert col.column is not None
        value = self._ref(table, rule, col.column, *keys, "column")
        if col.date_format is not None:
            self._check_dates(table, where, value, col, keys)
            value = f"CAST(try_strptime({value}, {_lit(col.date_format)}) AS DATE)"
            if col.part is not None:
                value = f"{col.part}({value})"
        if col.values is not None:
            cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in col.values.items())
            default = _lit(col.default) if col.default is not None else "NULL"
            value = f"CASE {value} {cases} ELSE {default} END"
        if col.code_map is not None:
            cmap = self.loaded.mapping.code_maps[col.code_map]
            code = f"(SELECT m.code FROM {_q('map_' + col.code_map)} m WHERE m.src = {value})"
            self.codes.append((cmap.vocabulary, where, code))
            return concept_sql(cmap.vocabulary, code)
        if col.code_system is not None:
            self.codes.append((col.code_system, where, value))
            return concept_sql(col.code_system, value)
        if col.type == "id":
            return id_sql(value)
        return value

    def _check_dates(self, table: str, where: str, value: str, col: ColumnRule,
                     keys: tuple[str, ...]) -> None:
        test = (f"{value} IS NOT NULL AND try_strptime({value}, {_lit(col.date_format)}) "
                "IS NULL")
        glue = " AND " if " WHERE " in where else " WHERE "
        bad = self.con.execute(f"SELECT {value} {where}{glue}{test} LIMIT 1").fetchone()
        if bad is not None:
            raise self.loaded.error(f"value {bad[0]!r} of source column {col.column!r} does not "
                                    f"match date_format {col.date_format!r}", "tables", table,
                                    *keys, "date_format")

    def table(self, table: str, rule: TableRule, out: Path) -> int:
        where = self._from(table, rule)
        exprs = [f"{self._expr(table, rule, name, col, where)} AS {_q(name)}"
                 for name, col in rule.columns.items()]
        target = out / f"{table}.csv"
        self.con.execute(f"COPY (SELECT {', '.join(exprs)} {where}) TO '{target.as_posix()}' "
                         "(HEADER, DELIMITER ',')")
        return int(self.con.execute(f"SELECT count(*) {where}").fetchone()[0])  # type: ignore[index]

    def concepts(self, out: Path, stats: MappedStats) -> None:
        """One concept row per distinct (vocabulary, code) the tables refer to."""
        parts = [f"SELECT DISTINCT {_lit(vocab)} AS vocabulary_id, {code} AS concept_code {where}"
                 for vocab, where, code in self.codes]
        if not parts:
            return
        codes = f"SELECT * FROM ({' UNION '.join(parts)}) WHERE concept_code IS NOT NULL"
        concept = (f"{CUSTOM_CONCEPT_BASE} + CAST(('0x' || substr(sha256(vocabulary_id || '|' "
                   "|| concept_code), 1, 12)) AS BIGINT)")
        self.con.execute(f"COPY (SELECT {concept} AS concept_id, concept_code AS concept_name, "
                         f"vocabulary_id, concept_code FROM ({codes})) TO "
                         f"'{(out / 'concept.csv').as_posix()}' (HEADER)")
        for vocab, n in self.con.execute(f"SELECT vocabulary_id, count(*) FROM ({codes}) "
                                         "GROUP BY 1").fetchall():
            stats.codes[str(vocab)] = int(n)


def convert(src: Path, loaded: LoadedMapping, out: Path) -> MappedStats:
    """Write the CDM CSV files a mapping describes for the export in ``src`` to ``out``."""
    stats = MappedStats()
    con = duckdb.connect()
    try:
        work = out / "_sources"
        work.mkdir(parents=True, exist_ok=True)
        build = _Build(con, loaded, Path(src), work)
        build.sources(stats)
        for table, rule in loaded.mapping.tables.items():
            stats.rows[table] = build.table(table, rule, out)
        build.concepts(out, stats)
    finally:
        con.close()
    return stats
