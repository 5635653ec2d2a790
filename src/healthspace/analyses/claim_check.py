"""Commercial-insurance claim verification on the payer node (one round of two DH-PSIs).

The insurer's client (:class:`healthspace.payer.claims.ClaimChecker`) sends its claims' keys
blinded under its own secret scalars, ``[a]H(x)``; the payer node builds the same keys from
its settled visits (national id from the identity vault, visit date, principal diagnosis,
total charge in fen), and answers ``[b]H(y)`` for its own keys and ``[b][a]H(x)`` for the
insurer's, in order. Only the client, holding ``a``, can match them: it learns per claim
``match`` / ``amount_mismatch`` / ``no_match``. The payer learns how many claims were checked
(the metered records); the hub relays pseudorandom points. See docs/payer.md.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params
from healthspace.analyses.registry import register
from healthspace.core.errors import InvalidInput, Refused
from healthspace.payer.claims import KEYS, amount_key, visit_key
from healthspace.privacy.psi import PsiSender
from healthspace.privacy.psi_crypto import derive_scalar
from healthspace.privacy.psi_wire import Mode

MAX_FRAMES = 100

_SETTLED = """
WITH dx AS (
  SELECT c.visit_occurrence_id AS visit_id,
         coalesce(arg_min(c.condition_source_value, c.condition_occurrence_id)
                    FILTER (WHERE c.condition_status_source_value = 'principal'),
                  arg_min(c.condition_source_value, c.condition_occurrence_id)) AS principal
  FROM condition_occurrence c GROUP BY 1),
charge AS (
  SELECT k.cost_event_id AS visit_id, sum(coalesce(k.total_charge, k.total_paid)) AS amount
  FROM cost k WHERE k.cost_domain_id = 'Visit' GROUP BY 1)
SELECT v.person_id, v.visit_start_date, dx.principal, charge.amount
FROM visit_occurrence v JOIN dx ON dx.visit_id = v.visit_occurrence_id
     JOIN charge ON charge.visit_id = v.visit_occurrence_id
WHERE v.person_id IN ({persons}) AND v.visit_start_date BETWEEN ? AND ?
"""


class Period(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError("period end is before its start")
        return self


class ClaimCheckParams(Params):
    requests: dict[str, list[str]] = Field(
        description="the insurer's blinded claim keys per PSI (visit, amount): base64 frames")
    group: Literal["ed25519", "x25519"] = "ed25519"
    period: Period | None = Field(default=None, description="settled visits in these dates")

    @model_validator(mode="after")
    def _both(self) -> ClaimCheckParams:
        if set(self.requests) != set(KEYS):
            raise ValueError(f"requests needs exactly the keys {', '.join(KEYS)}")
        for name, frames in self.requests.items():
            if not frames or len(frames) > MAX_FRAMES:
                raise ValueError(f"requests.{name} needs 1..{MAX_FRAMES} frames")
        return self


def _decode(frames: list[str], field: str) -> list[bytes]:
    try:
        return [base64.b64decode(f, validate=True) for f in frames]
    except (TypeError, ValueError):
        raise InvalidInput("a PSI frame is not base64", field=field) from None


class ClaimCheck(Analysis):
    name = "claim_check"
    title = "Commercial-insurance claim check against settled records (PSI)"
    params_model = ClaimCheckParams
    requires_cohort = False

    def check_nodes(self, params: Params, nodes: Sequence[str]) -> None:
        if len(nodes) != 1:
            raise InvalidInput("a claim check runs on the one node holding the settled "
                               "records (the payer site): name exactly one node", field="nodes")

    def _settled(self, ctx: LocalContext, period: Period | None) -> tuple[list[str], list[str]]:
        if ctx.linkage is None:
            raise Refused("this node has no identity vault for claim verification")
        start, end = (period.start, period.end) if period else (date(1900, 1, 1),
                                                                 date(2999, 12, 31))
        rows = ctx.con.execute(_SETTLED.format(persons=ctx.consented_persons_sql()),
                               [start, end]).fetchall()
        ids = ctx.linkage.national_ids(sorted({int(r[0]) for r in rows}))
        visits: set[str] = set()
        amounts: set[str] = set()
        for person, day, principal, amount in rows:
            nid = ids.get(int(person))
            if not nid or not principal or amount is None:
                continue
            visits.add(visit_key(nid, day, principal))
            amounts.add(amount_key(nid, day, principal, round(float(amount) * 100)))
        return sorted(visits), sorted(amounts)

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, ClaimCheckParams)
        own = dict(zip(KEYS, self._settled(ctx, params.period), strict=True))
        assert ctx.linkage is not None  # _settled refused otherwise
        offer: dict[str, list[str]] = {}
        answers: dict[str, list[str]] = {}
        checked = 0
        for name in KEYS:
            scalar = derive_scalar(ctx.linkage.study_secret(f"claims/{name}/{params.group}"),
                                   params.group)
            sender = PsiSender(own[name], Mode.MEMBERSHIP, group=params.group, scalar=scalar,
                               workers=1, assume_distinct=True)
            try:
                offer[name] = [base64.b64encode(f).decode() for f in sender.blinded_frames()]
                replies = [reply for frame in _decode(params.requests[name],
                                                      f"params.requests.{name}")
                           for reply in sender.answer(frame)]
                if not sender.done:
                    raise InvalidInput(f"the insurer's {name} frames are incomplete",
                                       field=f"params.requests.{name}")
                answers[name] = [base64.b64encode(f).decode() for f in replies]
                checked = max(checked, sender.receiver_count)
            finally:
                sender.close()
        ctx.records_used = checked  # the metered unit: claims checked
        return {"offer": offer, "answers": answers, "claims": checked,
                "settled_visits": len(own["visit"])}

    def combine(
        self, partials: Mapping[str, dict[str, Any]], params: Params, state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, ClaimCheckParams)
        if len(partials) != 1:
            raise Refused("the node holding the settled records did not answer")
        (node, partial), = partials.items()
        return Final({**partial, "node": node, "group": params.group,
                      "period": params.period.model_dump(mode="json") if params.period else None,
                      "decode": "only the submitting client can read the answers "
                                "(healthspace claims check)"})


register(ClaimCheck())
