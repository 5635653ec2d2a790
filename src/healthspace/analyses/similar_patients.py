"""Similar-patient outcome lookup (clinical decision support, "one patient, one plan").

Round 1 federates the standardisation statistics of the numeric features (n, sum, sum of
squares per node, each feature released only from at least k persons). Round 2: every node
computes each candidate's distance to the profile with the network means and SDs, takes its
k nearest, and releases only aggregates of them — per candidate treatment the number treated,
outcome counts and Kaplan–Meier event tallies, and a histogram of the distances — all under
the minimum cell size. The combine pools the nodes. docs/similar-patients.md has the method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from healthspace.analyses import similar_features as features
from healthspace.analyses import similar_outcomes as outcomes
from healthspace.analyses.base import (
    FLIPPED_CONSENT,
    Analysis,
    Final,
    LocalContext,
    NextRound,
    Params,
)
from healthspace.analyses.km import _counts
from healthspace.analyses.registry import register
from healthspace.analyses.similar_params import AGE, SimilarParams
from healthspace.analyses.similar_pool import ALL, EDGES, NONE, pool
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.disclosure import release_count, release_table


def _matrix(ctx: LocalContext, params: SimilarParams) -> features.FeatureMatrix:
    """The candidate pool's feature matrix, from the node's cache when it has one.

    The pool is the task's cohort, compiled, or — for a study naming a registry — the
    registry's materialised rows, keyed by a fingerprint of them so a refresh is seen.
    """
    from healthspace.cohort.compiler import compile_cohort

    if ctx.cohort is None:
        raise InvalidInput("similar_patients needs a cohort (the candidate pool)",
                           field="cohort")
    lookback = int(params.similarity.lookback_days)
    key: tuple[Any, ...]
    if ctx.registry is not None:
        table = f"temp.{ctx.registry.cohort_table}"
        sql, args = f"SELECT person_id, index_date FROM {table}", list[Any]()
        stamp = ctx.con.execute(
            f"SELECT count(*), sum(person_id), sum(date_diff('day', DATE '1970-01-01', "
            f"CAST(index_date AS DATE))) FROM {table}").fetchone()
        key = ("registry", sql, tuple(args), lookback, tuple(stamp or ()))
    else:
        compiled = compile_cohort(ctx.cohort, dialect="duckdb")
        sql, args = compiled.sql, list(compiled.params)
        key = ("cohort", sql, tuple(args), lookback)

    def make() -> features.FeatureMatrix:
        return features.build(ctx.con, sql, args, lookback)

    cache = ctx.feature_cache
    return cache.get(key, make) if cache is not None else make()


def _consented(ctx: LocalContext, matrix: features.FeatureMatrix) -> np.ndarray:
    """Row mask of the candidates whose consent permits the study's purpose."""
    consent = ctx.consent
    if consent is None or consent.is_noop:
        return np.ones(matrix.n, dtype=bool)
    rows = ctx.con.execute(f"SELECT p.person_id FROM person p WHERE {FLIPPED_CONSENT}").fetchall()
    flipped = np.isin(matrix.person_id, np.asarray([r[0] for r in rows], dtype=np.int64))
    return ~flipped if consent.default_permits else flipped


def _candidates(ctx: LocalContext, params: SimilarParams
                ) -> tuple[features.FeatureMatrix, np.ndarray]:
    matrix = _matrix(ctx, params)
    rows = np.nonzero(_consented(ctx, matrix))[0]
    if len(rows) < ctx.min_cell_size:
        raise Refused(f"only {len(rows)} consented candidates, below the minimum cell size "
                      f"{ctx.min_cell_size}; the lookup is refused")
    return matrix, rows


def _stats(matrix: features.FeatureMatrix, rows: np.ndarray, params: SimilarParams,
           k: int) -> dict[str, Any]:
    """Per numeric feature: n, sum and sum of squares, or null below k persons."""
    out: dict[str, Any] = {}
    for feature in params.numeric_weights():
        values = matrix.numeric(feature)[rows]
        values = values[~np.isnan(values)]
        out[feature] = None if len(values) < k else {
            "n": int(len(values)), "sum": float(values.sum()),
            "sumsq": float(np.square(values).sum())}
    return out


def _standardisation(partials: Mapping[str, dict[str, Any]], params: SimilarParams
                     ) -> dict[str, Any]:
    """Network mean and SD (n − 1) of each numeric feature; null when it cannot be had."""
    out: dict[str, Any] = {}
    for feature in params.numeric_weights():
        parts = [p["stats"][feature] for p in partials.values() if p["stats"].get(feature)]
        n = sum(int(p["n"]) for p in parts)
        if n < 2:
            out[feature] = None
            continue
        total = sum(float(p["sum"]) for p in parts)
        mean = total / n
        var = (sum(float(p["sumsq"]) for p in parts) - n * mean * mean) / (n - 1)
        sd = math.sqrt(max(var, 0.0))
        out[feature] = {"mean": mean, "sd": sd, "n": n} if sd > 0 else None
    return out


def distances(matrix: features.FeatureMatrix, rows: np.ndarray, params: SimilarParams,
              scale: Mapping[str, Any]) -> np.ndarray:
    """Each candidate's distance to the profile (docs/similar-patients.md):
    ``sqrt(Σ w·c² / Σ w)`` over the weighted coordinates ``c`` — a standardised difference per
    numeric feature (``missing_penalty`` where the candidate lacks it), 0/1 for a sex mismatch,
    and the Jaccard distance of each code set."""
    profile, spec = params.profile, params.similarity
    total = np.zeros(len(rows))
    weight = 0.0
    for feature, w in params.numeric_weights().items():
        stats = scale.get(feature)
        if stats is None:
            continue  # no network SD: the feature cannot be standardised and is dropped
        mine = float(profile.age if feature == AGE else profile.labs[feature])
        z = (matrix.numeric(feature)[rows] - mine) / float(stats["sd"])
        total += w * np.where(np.isnan(z), spec.missing_penalty ** 2, np.square(z))
        weight += w
    if profile.sex is not None and spec.sex_weight > 0:
        male = matrix.male[rows]
        mismatch = np.where(np.isnan(male), spec.missing_penalty ** 2,
                            (male != (1.0 if profile.sex == "M" else 0.0)).astype(float))
        total += spec.sex_weight * mismatch
        weight += spec.sex_weight
    for name, w in params.set_weights().items():
        prefix = spec.condition_prefix if name == "conditions" else spec.drug_prefix
        grouped, vocabulary = matrix.code_sets(name, prefix)
        codes = profile.conditions if name == "conditions" else profile.drugs
        total += w * np.square(jaccard(grouped[rows], vocabulary, None, codes, prefix))
        weight += w
    if weight <= 0:
        raise InvalidInput("no weighted feature can be compared at this node",
                           field="params.similarity")
    return np.sqrt(total / weight)


def jaccard(sets: Any, codes: tuple[str, ...], prefix: int | None, mine: list[str],
            mine_prefix: int | None = None) -> np.ndarray:
    """1 − |A∩B| / |A∪B| between each row's codes and ``mine``, both at ``prefix`` (``mine``
    at ``mine_prefix`` when the rows are already grouped); two empty sets are at distance 0."""
    grouped, vocabulary = features.prefix_sets(sets, codes, prefix)
    wanted = {features.truncate(code, prefix if mine_prefix is None else mine_prefix)
              for code in mine}
    rows = grouped.shape[0]
    query = np.asarray([code in wanted for code in vocabulary], dtype=np.float64)
    inter = (np.asarray(grouped.astype(np.float64) @ query).ravel() if len(vocabulary)
             else np.zeros(rows))
    sizes = np.asarray(grouped.sum(axis=1)).ravel() if len(vocabulary) else np.zeros(rows)
    union = sizes + len(wanted) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, 1.0 - inter / union, 0.0)


def nearest(distance: np.ndarray, person_id: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest distances; ties broken by the smaller person_id."""
    if len(distance) <= k:
        return np.lexsort((person_id, distance))
    kth = np.partition(distance, k - 1)[k - 1]
    below = np.nonzero(distance < kth)[0]
    ties = np.nonzero(distance == kth)[0]
    ties = ties[np.argsort(person_id[ties], kind="stable")][: k - len(below)]
    chosen = np.concatenate([below, ties])
    return chosen[np.lexsort((person_id[chosen], distance[chosen]))]


def _group_part(name: str, kind: str, mask: np.ndarray, times: dict[str, tuple[np.ndarray,
                np.ndarray]], params: SimilarParams, n_released: Any, k: int) -> dict[str, Any]:
    """One group's released aggregates; only its suppressed size when below k."""
    part: dict[str, Any] = {"name": name, "kind": kind, "n": n_released}
    if isinstance(n_released, str):
        return part
    part["outcomes"] = {
        o.name: release_count(int(times[o.name][1][mask].sum()), k) for o in params.outcomes}
    duration, event = times[params.km_name()]
    part["km"] = _counts(pd.DataFrame({"t": duration[mask], "e": event[mask]}), k)
    return part


def _groups(treated: dict[str, np.ndarray], times: dict[str, tuple[np.ndarray, np.ndarray]],
            params: SimilarParams, k: int, n: int) -> list[dict[str, Any]]:
    """The treatment groups, the untreated and all matched. When the treatment groups and the
    untreated partition the matched set, their sizes get complementary suppression."""
    masks = {name: m for name, m in treated.items()}
    kinds = dict.fromkeys(masks, "treatment")
    if treated:
        masks[NONE] = ~np.any(np.stack(list(treated.values())), axis=0)
        kinds[NONE] = "none"
    sizes = {name: int(m.sum()) for name, m in masks.items()}
    if masks and sum(sizes.values()) == n:
        released = release_table(sizes, k)
    else:
        released = {name: release_count(size, k) for name, size in sizes.items()}
    out = [_group_part(name, kinds[name], masks[name], times, params, released[name], k)
           for name in masks]
    out.append(_group_part(ALL, "all", np.ones(n, dtype=bool), times, params, n, k))
    return out


def _histogram(distance: np.ndarray, k: int) -> dict[str, Any]:
    """The distances on the :data:`EDGES` grid, adjacent bins merged until each released bin
    holds at least ``k`` patients: ``bins`` are ``[first edge, last edge, count]`` by edge
    position. The sum and sum of squares give the pooled mean and SD."""
    counts, _ = np.histogram(distance, bins=np.asarray(EDGES))
    bins: list[list[int]] = []
    start, running = 0, 0
    for i, count in enumerate(int(c) for c in counts):
        running += count
        if running >= k:
            bins.append([start, i + 1, running])
            start, running = i + 1, 0
    if start < len(counts):  # the tail holds fewer than k: it joins the last bin
        if bins:
            bins[-1][1], bins[-1][2] = len(counts), bins[-1][2] + running
        else:
            bins.append([0, len(counts), running])
    return {"bins": bins, "sum": float(distance.sum()),
            "sumsq": float(np.square(distance).sum())}


class SimilarPatients(Analysis):
    name = "similar_patients"
    title = "Similar-patient outcome lookup (k nearest per node, treatments and outcomes)"
    params_model = SimilarParams
    requires_cohort = True
    max_rounds = 2

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, SimilarParams)
        k = ctx.min_cell_size
        if params.k < k:
            raise Refused(f"k = {params.k} is below this node's minimum cell size {k}: every "
                          f"count would be suppressed")
        matrix, rows = _candidates(ctx, params)
        if round_input is None:
            ctx.records_used = len(rows)
            return {"candidates": release_count(len(rows), k),
                    "stats": _stats(matrix, rows, params, k)}
        scale = round_input.get("standardisation")
        if not isinstance(scale, dict):
            raise InvalidInput("round 2 needs the network standardisation",
                               field="round_input")
        distance = distances(matrix, rows, params, scale)
        chosen = nearest(distance, matrix.person_id[rows], params.k)
        picked = rows[chosen]
        order = np.argsort(matrix.person_id[picked])  # the SQL helpers want ids sorted
        picked, picked_distance = picked[order], distance[chosen][order]
        ctx.records_used = len(picked)
        return {"candidates": release_count(len(rows), k), "matched": len(picked),
                "min_cell_size": k, "similarity": _histogram(picked_distance, k),
                "groups": self._outcomes(ctx, params, matrix, picked, k)}

    @staticmethod
    def _outcomes(ctx: LocalContext, params: SimilarParams, matrix: features.FeatureMatrix,
                  picked: np.ndarray, k: int) -> list[dict[str, Any]]:
        person_id, index_day = matrix.person_id[picked], matrix.index_day[picked]
        outcomes.store_matched(ctx.con, person_id, index_day)
        try:
            treated = {t.name: outcomes.treated(ctx.con, t, person_id)
                       for t in params.treatments}
            end = outcomes.follow_up_end(ctx.con, person_id, index_day)
            death = outcomes.death_day(ctx.con, person_id)
            times = {o.name: outcomes.outcome_times(ctx.con, o, person_id, index_day, end,
                                                    death) for o in params.outcomes}
        finally:
            outcomes.drop_matched(ctx.con)
        return _groups(treated, times, params, k, len(person_id))

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, SimilarParams)
        if not partials:
            raise Refused("no node took part in the similar-patient lookup")
        if round == 1:
            scale = _standardisation(partials, params)
            return NextRound({"standardisation": scale}, {"standardisation": scale},
                             progress={"step": "standardised",
                                       "nodes": len(partials)})
        return Final(pool(partials, params, state.get("standardisation") or {}))


register(SimilarPatients())
