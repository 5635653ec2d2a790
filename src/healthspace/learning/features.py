"""Feature preparation agreed by the network: numeric standardisation and one-hot levels.

Round 1 of training sums, per node, the count and sum of every numeric feature and lists the
levels of every text feature; round 2 sums the squared deviations from the network means.
``Preparation.pooled`` turns the network sums into the means, standard deviations and levels
every node then encodes with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from healthspace.core.errors import InvalidInput

NUMERIC, CATEGORICAL = "numeric", "categorical"
MAX_LEVELS = 50


def feature_kinds(data: pd.DataFrame, features: Sequence[str]) -> dict[str, str]:
    """Numeric (numbers and booleans) or categorical (text) for each feature column."""
    kinds: dict[str, str] = {}
    for name in features:
        column = data[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            kinds[name] = NUMERIC
        else:
            kinds[name] = CATEGORICAL
    return kinds


def usable_rows(data: pd.DataFrame, target: str, features: Sequence[str]) -> pd.DataFrame:
    """The rows with a target and every feature present; the target must be 0/1."""
    missing = [c for c in (target, *features) if c not in data.columns]
    if missing:
        field_name = "params.target" if target in missing else "params.features"
        raise InvalidInput(f"unknown column(s): {', '.join(missing)}", field=field_name)
    if target in features:
        raise InvalidInput(f"the target {target!r} cannot also be a feature",
                           field="params.features")
    rows = data.dropna(subset=[target, *features]).reset_index(drop=True)
    column = rows[target]
    y = (column.astype(np.float64) if pd.api.types.is_bool_dtype(column)
         else pd.to_numeric(column, errors="coerce"))
    if y.isna().any() or not set(np.unique(y)).issubset({0.0, 1.0}):
        raise InvalidInput(f"the target {target!r} must be binary (0/1 or true/false)",
                           field="params.target")
    rows[target] = y.astype(np.float64)
    return rows


@dataclass(frozen=True)
class Preparation:
    """How every node turns its feature columns into the model's input matrix."""

    features: tuple[str, ...]
    kinds: dict[str, str]
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    levels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Input column names: numeric features, then ``feature=level`` indicators."""
        out: list[str] = []
        for name in self.features:
            if self.kinds[name] == NUMERIC:
                out.append(name)
            else:
                out.extend(f"{name}={level}" for level in self.levels[name])
        return out

    def encode(self, data: pd.DataFrame) -> np.ndarray:
        parts: list[np.ndarray] = []
        for name in self.features:
            if self.kinds[name] == NUMERIC:
                x = data[name].astype(np.float64).to_numpy()
                parts.append(((x - self.means[name]) / self.stds[name])[:, None])
            else:
                values = data[name].astype(str).to_numpy()
                parts.append(np.stack([values == level for level in self.levels[name]],
                                      axis=1).astype(np.float64))
        if not parts:
            return np.zeros((len(data), 0))
        return np.hstack(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "kinds": self.kinds, "means": self.means,
                "stds": self.stds, "levels": self.levels}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Preparation:
        return cls(tuple(raw["features"]), dict(raw["kinds"]),
                   {k: float(v) for k, v in raw.get("means", {}).items()},
                   {k: float(v) for k, v in raw.get("stds", {}).items()},
                   {k: [str(x) for x in v] for k, v in raw.get("levels", {}).items()})

    @classmethod
    def pooled(cls, features: Sequence[str], kinds: Mapping[str, str], n: float,
               sums: np.ndarray, deviations: np.ndarray,
               levels: Mapping[str, Sequence[str]]) -> Preparation:
        """Means and (n − 1) standard deviations of the numeric features over the network,
        from the summed values and the summed squared deviations from the network mean
        (two passes, so large-valued features keep their precision); both are ordered as
        the numeric features appear in ``features``."""
        numeric = [f for f in features if kinds[f] == NUMERIC]
        means, stds = {}, {}
        for i, name in enumerate(numeric):
            means[name] = float(sums[i]) / n
            std = math.sqrt(max(float(deviations[i]), 0.0) / max(n - 1, 1))
            stds[name] = std if std > 1e-12 else 1.0
        merged = {}
        for name in features:
            if kinds[name] == CATEGORICAL:
                found = sorted({str(v) for v in levels.get(name, ())})
                if len(found) > MAX_LEVELS:
                    raise InvalidInput(f"feature {name!r} has {len(found)} levels, more than "
                                       f"{MAX_LEVELS}", field="params.features")
                merged[name] = found
        return cls(tuple(features), dict(kinds), means, stds, merged)


def feature_sums(data: pd.DataFrame, features: Sequence[str],
                 kinds: Mapping[str, str]) -> np.ndarray:
    """The sum of each numeric feature (in feature order): the first pass."""
    numeric = [f for f in features if kinds[f] == NUMERIC]
    if not numeric:
        return np.zeros(0)
    return data[numeric].astype(np.float64).to_numpy().sum(axis=0)


def squared_deviations(data: pd.DataFrame, features: Sequence[str], kinds: Mapping[str, str],
                       means: Mapping[str, float]) -> np.ndarray:
    """Σ (x − network mean)² of each numeric feature: the second pass."""
    numeric = [f for f in features if kinds[f] == NUMERIC]
    if not numeric:
        return np.zeros(0)
    values = data[numeric].astype(np.float64).to_numpy()
    centre = np.asarray([means[f] for f in numeric], dtype=np.float64)
    return ((values - centre) ** 2).sum(axis=0)
