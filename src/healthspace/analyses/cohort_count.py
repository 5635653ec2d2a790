"""Cohort feasibility counts: per-site persons, total, and an age-band × sex breakdown.

Three release modes, chosen by the parameters: exact counts with small-cell suppression (the
default), differential privacy (``dp_epsilon``, see :mod:`healthspace.privacy.dp`) or
SHRINE-style obfuscation (``obfuscate``, see :mod:`healthspace.privacy.obfuscate`). With
``distinct`` (exact mode only) the nodes also release keyed-hash HyperLogLog sketches and the
result estimates the distinct persons across sites, ``distinct_total`` (docs/distinct-counts.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from healthspace.analyses.base import (
    Analysis,
    Final,
    LocalContext,
    NextRound,
    Params,
    Summable,
)
from healthspace.analyses.registry import register
from healthspace.core.canonical import canonical_json
from healthspace.core.encoding import decode_array, encode_array
from healthspace.privacy import hll
from healthspace.privacy.disclosure import (
    is_suppressed,
    release_count,
    release_table,
    suppressed_label,
)

MAX_EPSILON = 10.0

AGE_BANDS = [f"{lo}-{lo + 9}" for lo in range(0, 90, 10)] + ["90+"]
SEXES = ("F", "M")
UNKNOWN = "unknown"  # persons with another or unknown sex, or an impossible age


def breakdown_keys() -> list[tuple[str, str]]:
    """The fixed grid: every band × sex plus one unknown cell, so presence is never revealed."""
    return [(band, sex) for band in AGE_BANDS for sex in SEXES] + [(UNKNOWN, UNKNOWN)]


class CohortCountParams(Params):
    breakdown: bool = True
    dp_epsilon: float | None = Field(
        default=None, gt=0, le=MAX_EPSILON,
        description="release ε-differentially-private counts, spending this ε per site")
    obfuscate: bool = Field(default=False, description="SHRINE-style obfuscation (not DP)")

    @field_validator("obfuscate")
    @classmethod
    def _one_mode(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("dp_epsilon") is not None:
            raise ValueError("choose dp_epsilon or obfuscate, not both")
        return value

    distinct: bool = Field(default=False, description="also estimate the distinct persons "
                           "across sites (keyed-hash HyperLogLog); exact-count mode only")
    distinct_salt: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="per-study hashing salt (the study id); default: the cohort definition")
    distinct_precision: int = Field(default=hll.DEFAULT_PRECISION, ge=10,
                                    le=hll.MAX_PRECISION,
                                    description="HLL registers m = 2^p; error 1.04/√m")

    @field_validator("distinct")
    @classmethod
    def _exact_only(cls, value: bool, info: ValidationInfo) -> bool:
        # A sketch pins the count down to about 1 %: it would undo DP noise or obfuscation.
        if value and (info.data.get("dp_epsilon") is not None or info.data.get("obfuscate")):
            raise ValueError("distinct needs exact counts: not with dp_epsilon or obfuscate")
        return value


_BREAKDOWN_SQL = """
WITH cohort AS ({cohort})
SELECT
  CASE WHEN p.gender_concept_id = 8532 THEN 'F'
       WHEN p.gender_concept_id = 8507 THEN 'M' ELSE 'unknown' END AS sex,
  year(c.index_date) - p.year_of_birth AS age,
  count(*) AS n
FROM cohort c JOIN person p ON p.person_id = c.person_id
GROUP BY 1, 2
"""


def _band(age: int | None) -> str:
    if age is None or age < 0:
        return UNKNOWN
    return AGE_BANDS[min(age // 10, len(AGE_BANDS) - 1)]


class CohortCount(Analysis):
    name = "cohort_count"
    title = "Cohort feasibility counts"
    params_model = CohortCountParams
    requires_cohort = True
    secure = True

    def _cells(self, ctx: LocalContext) -> tuple[dict[tuple[str, str], int], str, list[Any]]:
        cohort_sql, args = ctx.cohort_persons_sql()
        rows = ctx.con.execute(_BREAKDOWN_SQL.format(cohort=cohort_sql), args).fetchall()
        cells = dict.fromkeys(breakdown_keys(), 0)
        for sex, age, n in rows:
            key = (_band(age), sex) if sex in SEXES and _band(age) != UNKNOWN else (UNKNOWN,) * 2
            cells[key] += int(n)
        return cells, cohort_sql, args

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, CohortCountParams)
        cells, cohort_sql, args = self._cells(ctx)
        if params.dp_epsilon is not None:
            return _local_dp(ctx, cells, params.dp_epsilon, params.breakdown)
        if params.obfuscate:
            return _local_obfuscated(ctx, cells, params.breakdown)
        ctx.guard_release()  # exact counts only: the node may refuse a differencing attack
        total = sum(cells.values())
        ctx.records_used = total
        k = ctx.min_cell_size
        count = release_count(total, k)
        partial: dict[str, Any] = {"count": count, "min_cell_size": k, "breakdown": None}
        if params.distinct:
            partial["distinct"] = _local_distinct(ctx, params, cohort_sql, args, count)
        if params.breakdown and not is_suppressed(count):
            released = release_table(cells, k)
            partial["breakdown"] = [
                {"age_band": band, "sex": sex, "count": value}
                for (band, sex), value in released.items()
            ]
        return partial

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        if any(p.get("dp") for p in partials.values()):
            return Final(_combine_dp(partials))
        sites = {name: partials[name]["count"] for name in sorted(partials)}
        released = [v for v in sites.values() if not is_suppressed(v)]
        result = {
            "sites": sites,
            "total": int(sum(released)),
            "total_is_lower_bound": len(released) < len(sites),
            "min_cell_size": {name: partials[name]["min_cell_size"] for name in sorted(partials)},
            "breakdown": _breakdowns(partials),
        }
        if isinstance(params, CohortCountParams) and params.distinct:
            result.update(_combine_distinct(partials, sites))
        if any(p.get("obfuscated") for p in partials.values()):
            result["obfuscated"] = True
        return Final(result)


    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        """Exact counts: the site count and every breakdown cell are masked, unsuppressed, so
        only network totals are known; the site's own (suppressed) count travels in clear only
        when its policy allows. A noised count (DP or obfuscated) is already safe per site: it
        travels in clear as in the plain protocol, with zeros masked."""
        assert isinstance(params, CohortCountParams)
        zeros = {"count": np.zeros(1, np.int64),
                 "cells": np.zeros(len(breakdown_keys()), np.int64)}
        integer = frozenset(zeros)
        if params.dp_epsilon is not None or params.obfuscate:
            return Summable({"noised": self.local(ctx, params, round_input)}, zeros, integer)
        cells, cohort_sql, args = self._cells(ctx)
        ctx.guard_release()  # the exact network total includes this node's exact count
        total = sum(cells.values())
        ctx.records_used = total
        k = ctx.min_cell_size
        public: dict[str, Any] = {
            "min_cell_size": k,
            "count": release_count(total, k) if ctx.release_site_counts else None,
        }
        sums = {"count": np.asarray([total], np.int64),
                "cells": np.asarray([cells[key] for key in breakdown_keys()], np.int64)}
        if params.distinct:  # masked too: the hub sees only the network's summed sketch
            indicator, unlinked, _ = _sketch(ctx, params, cohort_sql, args)
            sums.update(sketch=np.asarray(indicator, np.int64),
                        unlinked=np.asarray([unlinked], np.int64))
            integer = integer | {"sketch", "unlinked"}
        return Summable(public, sums, integer)

    def combine_secure(
        self,
        sums: Mapping[str, np.ndarray],
        publics: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, CohortCountParams)
        noised = {name: p["noised"] for name, p in publics.items() if "noised" in p}
        exact = {name: p for name, p in publics.items() if "noised" not in p}
        if not exact:
            return self.combine(noised, params, state, round)
        result = _secure_counts(exact, int(sums["count"][0]),
                                [int(v) for v in sums["cells"]], params.breakdown)
        if params.distinct:
            k = max(result["min_cell_size"].values())
            result.update(_secure_distinct(sums, params.distinct_precision, k))
        if noised:  # policy-forced noise at some sites: their counts add in clear
            plain = self.combine(noised, params, state, round)
            assert isinstance(plain, Final)
            result["sites"].update(plain.result["sites"])
            result["min_cell_size"].update(plain.result["min_cell_size"])
            extra = [v for v in plain.result["sites"].values() if isinstance(v, int)]
            if isinstance(result["total"], int):
                result["total"] += sum(extra)
            result["total_is_lower_bound"] = True if len(extra) < len(noised) else bool(
                result["total_is_lower_bound"])
            result["noised_sites"] = sorted(noised)
            if plain.result.get("obfuscated"):
                result["obfuscated"] = True
            if plain.result.get("dp"):
                result["dp_sites"] = sorted(noised)
        return Final(result)


def _secure_distinct(sums: Mapping[str, np.ndarray], p: int, k: int) -> dict[str, Any]:
    """The distinct estimate from the network's summed sketch (every site's, small ones too:
    masked, they reveal nothing on their own), capped by the exact network total."""
    total = int(sums["count"][0])
    estimate = min(hll.estimate(np.asarray(sums["sketch"]).reshape(2**p, hll.ranks(p))),
                   float(total))
    unlinked = int(sums["unlinked"][0])
    return {
        "distinct_total": round(estimate),
        "distinct_total_error": math.ceil(2 * hll.standard_error(p) * estimate),
        "distinct_confidence": 0.95,
        "distinct_method": "hll",
        "distinct_total_is_lower_bound": False,
        "distinct_unlinked": {"network": release_count(unlinked, k) if unlinked else 0},
    }


def _secure_counts(publics: Mapping[str, dict[str, Any]], total: int, cells: list[int],
                   breakdown: bool) -> dict[str, Any]:
    """Release the exact network total and, where safe, the sites' own released counts.

    ``k`` is the strictest node's. Per-site counts are shown only when the sites that hide
    theirs (suppressed, or withheld by policy) are none, or at least two whose hidden sum —
    the total minus the shown counts — is at least ``k``: otherwise subtraction would pin a
    hidden site down, and all per-site counts are withheld (``sites_withheld``).
    """
    names = sorted(publics)
    k = max(int(publics[n]["min_cell_size"]) for n in names)
    released_total = release_count(total, k) if total else 0
    shown = {n: publics[n].get("count") for n in names}
    clear = {n: v for n, v in shown.items() if isinstance(v, int)}
    hidden = [n for n in names if n not in clear]
    rest = total - sum(clear.values())
    safe = not hidden or (len(hidden) >= 2 and (rest == 0 or rest >= k))
    if is_suppressed(released_total):
        safe = False  # a small total: nothing below it may be shown either
    sites = {n: (shown[n] if safe else None) for n in names}
    result: dict[str, Any] = {
        "sites": sites,
        "total": released_total,
        "total_is_lower_bound": False,
        "min_cell_size": {n: int(publics[n]["min_cell_size"]) for n in names},
        "breakdown": {},
        "secure_aggregation": True,
        "sites_withheld": not safe,
    }
    if breakdown and not is_suppressed(released_total) and total:
        keys = breakdown_keys()
        released = release_table(dict(zip(keys, cells, strict=True)), k)
        result["breakdown"] = {"network": [
            {"age_band": band, "sex": sex, "count": value}
            for (band, sex), value in released.items()]}
    return result


_PSEUDONYM_SQL = """
WITH cohort AS ({cohort})
SELECT DISTINCT c.person_id, p.person_source_value
FROM cohort c JOIN person p ON p.person_id = c.person_id
"""


def _sketch(ctx: LocalContext, params: CohortCountParams, cohort_sql: str,
            args: list[Any]) -> tuple[hll.Indicator, int, int]:
    """The node's HLL indicator sketch of its cohort keyed by the network pseudonym, the
    persons without one, and the persons sketched. A person without a pseudonym is hashed
    under a site-local key: counted once, never de-duplicated across sites."""
    rows = ctx.con.execute(_PSEUDONYM_SQL.format(cohort=cohort_sql), args).fetchall()
    pseudonyms = [str(psv).strip() if psv is not None else "" for _, psv in rows]
    # Domain-separated, so a site-local key can never equal a pseudonym's.
    ids = [f"psv\x00{psv}" if psv else f"local\x00{ctx.site}\x00{pid}"
           for (pid, _), psv in zip(rows, pseudonyms, strict=True)]
    study = params.distinct_salt or "cohort:" + canonical_json(
        ctx.cohort.model_dump(mode="json")).decode()
    indicator = hll.sketch(ids, hll.study_salt(study), params.distinct_precision)
    return indicator, pseudonyms.count(""), len(ids)


def _local_distinct(ctx: LocalContext, params: CohortCountParams, cohort_sql: str,
                    args: list[Any], count: int | str) -> dict[str, Any]:
    """The node's sketch for the plain protocol; withheld when the count itself is
    suppressed, and the unlinked persons never a separate small cell."""
    p = params.distinct_precision
    out: dict[str, Any] = {"method": "hll", "precision": p, "sketch": None, "unlinked": None}
    if is_suppressed(count):
        return out
    indicator, unlinked, n = _sketch(ctx, params, cohort_sql, args)
    out["sketch"] = encode_array(hll.pack(indicator))
    # Complementary: neither the unlinked nor (count - unlinked) may be a small cell.
    k = ctx.min_cell_size
    small = 0 < unlinked < k or 0 < n - unlinked < k
    out["unlinked"] = suppressed_label(k) if small else unlinked
    return out


def _combine_distinct(partials: Mapping[str, dict[str, Any]],
                      sites: Mapping[str, Any]) -> dict[str, Any]:
    """Sum the released sketches (their union) and estimate; ± is 2 standard errors (≈95 %).
    A site without a sketch (suppressed count) makes the estimate a lower bound."""
    entries = {name: partials[name].get("distinct") or {} for name in sorted(partials)}
    used = [name for name, e in entries.items() if e.get("sketch") is not None]
    if len({entries[name]["precision"] for name in used}) > 1:
        raise ValueError("the sites' HLL sketches have different precisions")
    estimate, error = 0.0, 0
    if used:
        p = int(entries[used[0]]["precision"])
        summed = hll.merge(hll.unpack(decode_array(entries[name]["sketch"]), p)
                           for name in used)
        # The union never exceeds the sum of its parts: clamping only removes error.
        estimate = min(hll.estimate(summed), float(sum(int(sites[name]) for name in used)))
        error = math.ceil(2 * hll.standard_error(p) * estimate)
    return {
        "distinct_total": round(estimate),
        "distinct_total_error": error,
        "distinct_confidence": 0.95,
        "distinct_method": "hll",
        "distinct_total_is_lower_bound": len(used) < len(entries),
        "distinct_sites": used,
        "distinct_unlinked": {name: e.get("unlinked") for name, e in entries.items()},
    }


def _breakdowns(partials: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: partials[name]["breakdown"] for name in sorted(partials)
            if partials[name].get("breakdown") is not None}


def _cells_out(keys: list[tuple[str, str]], values: list[Any]) -> list[dict[str, Any]]:
    return [{"age_band": band, "sex": sex, "count": value}
            for (band, sex), value in zip(keys, values, strict=True)]


def _local_dp(
    ctx: LocalContext, cells: dict[tuple[str, str], int], epsilon: float, breakdown: bool
) -> dict[str, Any]:
    """ε-DP release. With the breakdown, the cells are one histogram (each person in exactly
    one cell: L1 sensitivity 1, ε) and the site count is the sum of the noisy cells —
    post-processing, so the site spends ε in all. Without it, the count alone spends ε.

    No small-cell suppression: the noise, not a threshold, protects each person, and
    suppressing on noisy values would only add bias. Negative noisy counts are released as
    they are, so sums over cells and sites stay unbiased; clamping at 0 is left to readers.
    """
    from healthspace.privacy.dp import dp_count, dp_histogram, sum_half_width

    keys = list(cells)
    partial: dict[str, Any] = {"min_cell_size": ctx.min_cell_size, "dp": True,
                               "epsilon": epsilon, "breakdown": None}
    if breakdown:
        noisy = dp_histogram([cells[key] for key in keys], epsilon)
        scales = [n.scale for n in noisy]
        partial["breakdown"] = _cells_out(keys, [int(n.value) for n in noisy])
        partial["cell_half_width"] = noisy[0].half_width
        count = int(sum(n.value for n in noisy))
        half = sum_half_width(scales)
    else:
        one = dp_count(sum(cells.values()), epsilon)
        count, half, scales = int(one.value), int(one.half_width), [one.scale]
    partial.update(count=count, half_width=half, noise_scales=scales)
    ctx.records_used = max(count, 0)  # the metrics leave the node too: never the exact count
    return partial


def _local_obfuscated(
    ctx: LocalContext, cells: dict[tuple[str, str], int], breakdown: bool
) -> dict[str, Any]:
    """SHRINE-style obfuscation of the count and of every cell (not DP); the low limit is at
    least the node's minimum cell size."""
    from healthspace.privacy.obfuscate import Obfuscation, is_low, obfuscate_count

    config = Obfuscation(low_limit=max(Obfuscation().low_limit, ctx.min_cell_size))
    count = obfuscate_count(sum(cells.values()), config)
    ctx.records_used = 0 if is_low(count) else int(count)
    partial: dict[str, Any] = {"count": count, "min_cell_size": ctx.min_cell_size,
                               "obfuscated": True, "low_limit": config.low_limit,
                               "breakdown": None}
    if breakdown and not is_low(count):
        keys = list(cells)
        partial["breakdown"] = _cells_out(keys, [obfuscate_count(cells[k], config)
                                                 for k in keys])
    return partial


def _combine_dp(partials: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Sum of noisy site counts; its 95 % half-width is exact for the sum of the independent
    discrete Laplace noises (their pmfs convolved). ε is charged per site; the study's ε is
    their sum (sequential composition), which holds even for a person recorded at several
    sites — with disjoint sites (parallel composition) the maximum would do."""
    from healthspace.privacy.dp import sum_half_width

    names = sorted(partials)
    if not all(partials[n].get("dp") for n in names):
        raise ValueError("cannot combine DP and non-DP partials")
    scales = [s for n in names for s in partials[n]["noise_scales"]]
    epsilons = {n: partials[n]["epsilon"] for n in names}
    return {
        "dp": True,
        "sites": {n: partials[n]["count"] for n in names},
        "intervals": {n: partials[n]["half_width"] for n in names},
        "total": int(sum(partials[n]["count"] for n in names)),
        "total_interval": sum_half_width(scales),
        "total_is_lower_bound": False,
        "epsilon": {"sites": epsilons, "study": sum(epsilons.values())},
        "confidence": 0.95,
        "min_cell_size": {n: partials[n]["min_cell_size"] for n in names},
        "breakdown": _breakdowns(partials),
        "cell_intervals": {n: partials[n]["cell_half_width"] for n in names
                           if "cell_half_width" in partials[n]},
    }


register(CohortCount())
