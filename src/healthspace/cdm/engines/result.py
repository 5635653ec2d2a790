"""A fetched result with the DuckDB result API the analyses use: fetchall/fetchone/df."""

from __future__ import annotations

import decimal
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

# Column kinds an adapter reports, so ``df()`` gives the dtypes DuckDB's ``df()`` would.
INTEGER, FLOAT, BOOLEAN, OTHER = "integer", "float", "boolean", "other"


def plain_value(value: Any) -> Any:
    """A NUMERIC value as DuckDB returns its type: an integral one as int, else a float."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class Result:
    """Rows already fetched from the engine, read like a DuckDB result.

    ``description`` follows DB-API: one ``(name, type_code, None, None, None, None, None)``
    tuple per column. ``frame`` builds the DataFrame directly when the engine can (Spark).
    """

    def __init__(self, columns: Sequence[str], kinds: Sequence[str],
                 rows: list[tuple[Any, ...]],
                 frame: Callable[[], pd.DataFrame] | None = None) -> None:
        self.columns = list(columns)
        self.kinds = list(kinds)
        self.rows = rows
        self._frame = frame
        self._next = 0
        self.description = [(name, kind, None, None, None, None, None)
                            for name, kind in zip(self.columns, self.kinds, strict=True)]

    @property
    def rowcount(self) -> int:
        return len(self.rows)

    def fetchall(self) -> list[tuple[Any, ...]]:
        rest, self._next = self.rows[self._next:], len(self.rows)
        return rest

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self.rows):
            return None
        self._next += 1
        return self.rows[self._next - 1]

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        part = self.rows[self._next:self._next + size]
        self._next += len(part)
        return part

    def df(self) -> pd.DataFrame:
        """The rows as a DataFrame with the dtypes DuckDB's ``df()`` gives: integers int64, or
        nullable Int64 when a value is NULL; booleans likewise; floats float64."""
        if self._frame is not None:
            return self._frame()
        frame = pd.DataFrame.from_records(self.rows, columns=self.columns,
                                          coerce_float=True)
        for name, kind in zip(self.columns, self.kinds, strict=True):
            column = frame[name]
            if kind == INTEGER:
                frame[name] = column.astype("Int64" if column.isna().any() else "int64")
            elif kind == BOOLEAN:
                frame[name] = column.astype("boolean" if column.isna().any() else "bool")
            elif kind == FLOAT:
                frame[name] = column.astype("float64")
        return frame

    fetchdf = df
