"""learning.features: pooled standardisation equals pandas, one-hot levels, row checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from healthspace.core.errors import InvalidInput
from healthspace.learning.features import (
    MAX_LEVELS,
    Preparation,
    feature_kinds,
    feature_sums,
    squared_deviations,
    usable_rows,
)


def frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(60, 12, n), "dose": rng.integers(0, 5, n),
        "smoker": rng.uniform(size=n) < 0.3, "region": rng.choice(["west", "east", "north"], n),
        "y": rng.integers(0, 2, n)})


FEATURES = ["age", "dose", "smoker", "region"]


def pooled_from_parts(parts, features=FEATURES):
    """The two passes as the protocol runs them: sums and levels, then squared deviations."""
    kinds = feature_kinds(parts[0], features)
    n, total, levels = 0, 0, {}
    for part in parts:
        n, total = n + len(part), total + feature_sums(part, features, kinds)
        for name, kind in kinds.items():
            if kind == "categorical":
                levels.setdefault(name, set()).update(part[name].astype(str))
    numeric = [f for f in features if kinds[f] == "numeric"]
    means = {f: float(total[i]) / n for i, f in enumerate(numeric)}
    deviations = sum(squared_deviations(part, features, kinds, means) for part in parts)
    return Preparation.pooled(features, kinds, n, total, deviations,
                              {k: sorted(v) for k, v in levels.items()})


def test_kinds():
    assert feature_kinds(frame(), FEATURES) == {"age": "numeric", "dose": "numeric",
                                                "smoker": "numeric", "region": "categorical"}


def test_pooled_equals_pandas_mean_and_sample_std():
    data = frame()
    parts = [data.iloc[:50], data.iloc[50:220], data.iloc[220:]]
    prep = pooled_from_parts(parts)
    for name in ("age", "dose", "smoker"):
        column = data[name].astype(float)
        assert prep.means[name] == pytest.approx(column.mean(), rel=1e-12)
        assert prep.stds[name] == pytest.approx(column.std(ddof=1), rel=1e-10)
    assert prep.levels == {"region": ["east", "north", "west"]}
    assert prep.columns == ["age", "dose", "smoker", "region=east", "region=north",
                            "region=west"]
    X = prep.encode(data)
    expected = np.column_stack(
        [(data[c].astype(float) - data[c].astype(float).mean()) / data[c].astype(float).std()
         for c in ("age", "dose", "smoker")]
        + [pd.get_dummies(data["region"])[lv].to_numpy(float) for lv in ("east", "north", "west")])
    assert np.max(np.abs(X - expected)) <= 1e-10
    assert np.allclose(X[:, :3].mean(axis=0), 0, atol=1e-12)
    assert np.allclose(X[:, :3].std(axis=0, ddof=1), 1, atol=1e-10)
    assert np.array_equal(X[:, 3:].sum(axis=1), np.ones(len(data)))


def test_levels_merge_over_sites_and_unseen_levels_encode_as_zeros():
    data = frame()
    west_only = data[data.region == "west"]
    rest = data[data.region != "west"]
    prep = pooled_from_parts([west_only, rest])
    assert prep.levels["region"] == ["east", "north", "west"]
    X = prep.encode(pd.DataFrame({"age": [60.0], "dose": [1], "smoker": [False],
                                  "region": ["south"]}))
    assert X[0, 3:].tolist() == [0.0, 0.0, 0.0]


def test_constant_feature_gets_unit_std_and_round_trips():
    data = frame().assign(dose=2)
    prep = pooled_from_parts([data])
    assert prep.stds["dose"] == 1.0 and prep.means["dose"] == 2.0
    again = Preparation.from_dict(prep.as_dict())
    assert again == prep
    assert np.array_equal(again.encode(data), prep.encode(data))


def test_too_many_levels_is_refused():
    data = pd.DataFrame({"code": [f"c{i}" for i in range(MAX_LEVELS + 1)], "y": 0})
    with pytest.raises(InvalidInput) as info:
        pooled_from_parts([data], ["code"])
    assert info.value.field == "params.features"


def test_usable_rows_drops_missing_and_coerces_the_target():
    data = frame(20)
    data.loc[3, "age"] = np.nan
    data.loc[5, "y"] = np.nan
    data.loc[7, "region"] = None
    rows = usable_rows(data, "y", FEATURES)
    assert len(rows) == 17
    assert rows["y"].dtype == np.float64 and set(rows["y"]) <= {0.0, 1.0}
    flags = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [True, False, True]})
    assert usable_rows(flags, "y", ["x"])["y"].tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(("target", "features", "change", "field"), [
    ("y", ["age"], lambda d: d.assign(y=d["y"] + 1), "params.target"),          # 1/2
    ("y", ["age"], lambda d: d.assign(y=d["age"]), "params.target"),            # continuous
    ("y", ["age"], lambda d: d.assign(y=np.where(d.y > 0, "yes", "no")), "params.target"),
    ("outcome", ["age"], lambda d: d, "params.target"),                          # unknown
    ("y", ["age", "nosuch"], lambda d: d, "params.features"),
    ("y", ["age", "y"], lambda d: d, "params.features"),
])
def test_usable_rows_errors_name_the_field(target, features, change, field):
    with pytest.raises(InvalidInput) as info:
        usable_rows(change(frame(30)), target, features)
    assert info.value.field == field


def test_pooled_std_of_a_large_valued_feature():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"t": 1.7e9 + rng.normal(0, 100, 1000)})
    prep = pooled_from_parts([data], ["t"])
    assert prep.stds["t"] == pytest.approx(data["t"].std(ddof=1), rel=1e-6)
