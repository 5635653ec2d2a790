"""Fund-fraud screening on the payer node: flags per hospital and a ranked upcoding signal.

Runs on the node that holds the settlement claims (the payer site sees every hospital's).
Flagged claims stay on that node — kept in its state (``payer findings``) and exportable
with ``payer screen --out``. The consumer — the bureau's analyst — gets per-hospital counts
of each flag (1..k−1 suppressed) and the hospitals ranked by the lower bound of their
standardised CC/MCC ratio (``healthspace.payer.screening``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params
from healthspace.analyses.casemix import CasemixParams
from healthspace.analyses.registry import register
from healthspace.core.errors import InvalidInput, Refused
from healthspace.payer.cases import grouped_cases
from healthspace.payer.screening import FLAGS, flag_claims, upcoding


class ScreenParams(CasemixParams):
    readmit_days: int = Field(default=15, ge=1, le=90,
                              description="split admission: readmitted within this many days")


def flagged_rows(flagged: Any) -> list[dict[str, Any]]:
    """One finding per flag raised on a claim: visit, person, hospital, dates, DRG, flag."""
    rows = []
    for flag in FLAGS:
        hit = flagged[flagged[flag]]
        for visit, person, hospital, admitted, discharged, drg in zip(
                hit["visit_id"], hit["person_id"], hit["hospital"], hit["admitted"],
                hit["discharged"], hit["drg"], strict=True):
            rows.append({"visit_id": int(visit), "person_id": int(person),
                         "hospital": str(hospital), "admitted": str(admitted),
                         "discharged": str(discharged), "drg": str(drg), "finding": flag})
    return rows


class FraudScreen(Analysis):
    name = "fraud_screen"
    title = "Fund-fraud screening: split admissions, duplicate billing, LOS outliers, upcoding"
    params_model = ScreenParams
    requires_cohort = False

    def check_nodes(self, params: Params, nodes: Sequence[str]) -> None:
        if len(nodes) != 1:
            raise InvalidInput("fraud screening runs on the one node holding the settlement "
                               "claims (the payer site): name exactly one node", field="nodes")

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, ScreenParams)
        cases = grouped_cases(ctx.con, params.grouping, ctx.consented_persons_sql())
        ctx.records_used = int(cases["person_id"].nunique()) if len(cases) else 0
        if len(cases) < ctx.min_cell_size:
            raise Refused(f"only {len(cases)} inpatient claims, below the minimum cell size")
        flagged = flag_claims(cases, params.readmit_days)
        if ctx.findings_sink is not None:
            ctx.findings_sink("fraud_screen", flagged_rows(flagged))
        k = ctx.min_cell_size

        def shown(count: int) -> int | None:
            return None if 0 < count < k else count

        hospitals = []
        for hospital, group in flagged.groupby("hospital"):
            if len(group) < k:
                continue
            row: dict[str, Any] = {"hospital": str(hospital), "claims": int(len(group))}
            row.update({flag: shown(int(group[flag].sum())) for flag in FLAGS})
            hospitals.append(row)
        ranked = [r for r in upcoding(cases) if r["cases"] >= k]
        return {"hospitals": hospitals, "upcoding": ranked, "k": k,
                "claims": int(len(cases)), "readmit_days": params.readmit_days}

    def combine(
        self, partials: Mapping[str, dict[str, Any]], params: Params, state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        if len(partials) != 1:
            raise Refused("fraud screening needs the one node holding the claims")
        (node, partial), = partials.items()
        rules = params.grouping if isinstance(params, ScreenParams) else None
        return Final({**partial, "node": node,
                      "rules": {"name": rules.name, "version": rules.version,
                                "official": rules.official} if rules else None,
                      "flagged_claims": "kept on the node (payer findings)"})


register(FraudScreen())
