"""Cohort feasibility counts: per-site persons, total, and an age-band × sex breakdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params
from healthspace.analyses.registry import register
from healthspace.privacy.disclosure import is_suppressed, release_count, release_table

AGE_BANDS = [f"{lo}-{lo + 9}" for lo in range(0, 90, 10)] + ["90+"]
SEXES = ("F", "M")
UNKNOWN = "unknown"  # persons with another or unknown sex, or an impossible age


def breakdown_keys() -> list[tuple[str, str]]:
    """The fixed grid: every band × sex plus one unknown cell, so presence is never revealed."""
    return [(band, sex) for band in AGE_BANDS for sex in SEXES] + [(UNKNOWN, UNKNOWN)]


class CohortCountParams(Params):
    breakdown: bool = True


_BREAKDOWN_SQL = """
WITH cohort AS ({cohort})
SELECT
  CASE WHEN p.gender_concept_id = 8532 THEN 'F'
       WHEN p.gender_concept_id = 8507 THEN 'M' ELSE 'unknown' END AS sex,
  year(c.index_date) - p.year_of_birth AS age,
  count(*) AS n
FROM cohort c JOIN person p ON p.person_id = c.person_id
GROUP BY ALL
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

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, CohortCountParams)
        cohort_sql, args = ctx.cohort_persons_sql()
        rows = ctx.con.execute(_BREAKDOWN_SQL.format(cohort=cohort_sql), args).fetchall()
        cells = dict.fromkeys(breakdown_keys(), 0)
        for sex, age, n in rows:
            key = (_band(age), sex) if sex in SEXES and _band(age) != UNKNOWN else (UNKNOWN,) * 2
            cells[key] += int(n)
        total = sum(cells.values())
        ctx.records_used = total
        k = ctx.min_cell_size
        count = release_count(total, k)
        partial: dict[str, Any] = {"count": count, "min_cell_size": k, "breakdown": None}
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
        sites = {name: partials[name]["count"] for name in sorted(partials)}
        released = [v for v in sites.values() if not is_suppressed(v)]
        result = {
            "sites": sites,
            "total": int(sum(released)),
            "total_is_lower_bound": len(released) < len(sites),
            "min_cell_size": {name: partials[name]["min_cell_size"] for name in sorted(partials)},
            "breakdown": {
                name: partials[name]["breakdown"]
                for name in sorted(partials)
                if partials[name].get("breakdown") is not None
            },
        }
        return Final(result)


register(CohortCount())
