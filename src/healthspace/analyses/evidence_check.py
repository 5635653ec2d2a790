"""Federated evidence check: do the treating hospitals' records back the payer's claim codes?

The payer node picks its inpatient claims coded with a severity-raising secondary diagnosis
covered by the evidence rule file (:mod:`healthspace.payer.evidence`) and asks each treating
hospital, claim by claim, whether its own record supports the code. Claims are matched by
(``person_source_value``, admission and discharge dates). Four rounds, every message between
nodes sealed to its recipient (:mod:`healthspace.privacy.sealed`):

Claims the payer's screen flags as split admissions (``readmissions``, on by default) are
also asked whether the hospital's record holds that stay at all (pseudo-code ``stay``).

1. every node publishes a per-study box key;
2. the payer seals to each hospital node the list of that hospital's claims to check (an
   empty list for a hospital with none) and, to itself, which claim each query is;
3. each hospital opens only its own list, checks its record and seals the answers —
   ``supported`` / ``unsupported`` / ``no_record`` per code — to the payer;
4. the payer opens the answers, keeps them per claim in its node state (``payer findings``)
   and releases per-hospital and per-rule counts (1..k−1 suppressed).

The hub relays keys and sealed messages and learns only their size class; a hospital learns
which of its own visits were queried, and nothing about other hospitals' claims; the
consumer (the payer's analyst) sees counts only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, field_validator

from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params
from healthspace.analyses.fraud_screen import ScreenParams
from healthspace.analyses.registry import register
from healthspace.core.errors import InvalidInput, Refused
from healthspace.payer.cases import grouped_cases
from healthspace.payer.evidence import (
    ANSWERS,
    STAY,
    STAY_TITLE,
    EvidenceRules,
    check_claims,
    claims_to_check,
    load_evidence_rules,
)
from healthspace.payer.screening import flag_claims
from healthspace.privacy.sealed import BoxKey, public_key, seal

FINDINGS_KIND = "evidence_check"


class EvidenceParams(ScreenParams):
    """``rules`` (grouping) and ``readmit_days`` are the fraud screen's, for the split
    admissions whose stays are checked."""

    payer: str = Field(min_length=1, max_length=64,
                       description="the node holding the settlement claims")
    evidence_rules: dict[str, Any] | None = Field(
        default=None, description="an evidence rule file (docs/payer.md); null = the sample")
    hospitals: dict[str, str] | None = Field(
        default=None, max_length=1000,
        description="claim hospital code (care_site_source_value) -> node name; default: "
                    "a hospital's claims go to the node of the same name")
    readmissions: bool = Field(
        default=True, description="also ask whether the hospital recorded each stay the "
                                  "screen flags as a split admission")

    @field_validator("evidence_rules")
    @classmethod
    def _valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            load_evidence_rules(value)
        return value

    @property
    def evidence(self) -> EvidenceRules:
        return load_evidence_rules(self.evidence_rules)


def _claim_answer(answers: Mapping[str, str]) -> str:
    values = set(answers.values())
    if "no_record" in values:
        return "no_record"
    return "unsupported" if "unsupported" in values else "supported"


class EvidenceCheck(Analysis):
    name = "evidence_check"
    title = "Evidence check: hospitals' records vs the payer's severity codes"
    params_model = EvidenceParams
    requires_cohort = False
    max_rounds = 4

    def check_nodes(self, params: Params, nodes: Sequence[str]) -> None:
        assert isinstance(params, EvidenceParams)
        if params.payer not in nodes:
            raise InvalidInput(f"payer {params.payer!r} is not one of the study's nodes "
                               f"({', '.join(nodes)})", field="params.payer")
        if len(nodes) < 2:
            raise InvalidInput("an evidence check needs the payer node and at least one "
                               "hospital node", field="nodes")
        unknown = sorted(set((params.hospitals or {}).values()) - set(nodes) - {params.payer})
        if unknown:
            raise InvalidInput(f"params.hospitals names nodes outside the study: "
                               f"{', '.join(unknown)}", field="params.hospitals")

    # --- the node side --------------------------------------------------------------

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, EvidenceParams)
        if ctx.linkage is None:
            raise Refused("an evidence check needs the node's state (its per-study keys)")
        key = BoxKey.from_secret(ctx.linkage.study_secret("evidence/box"))
        payer = ctx.site == params.payer
        role = "payer" if payer else "hospital"
        step = 1 if round_input is None else round_input.get("step")
        if step == 1:
            return {"role": role, "key": key.public_b64}
        if not isinstance(round_input, dict) or step not in (2, 3, 4):
            raise InvalidInput("unknown evidence-check step", field="round_input.step")
        if step == 2:
            return self._ask(ctx, params, key, round_input) if payer else {"role": role}
        if step == 3:
            return {"role": role} if payer else self._answer(ctx, params, key, round_input)
        return self._collect(ctx, params, key, round_input) if payer else {"role": role}

    def _ask(self, ctx: LocalContext, params: EvidenceParams, key: BoxKey,
             round_input: dict[str, Any]) -> dict[str, Any]:
        keys = round_input.get("keys")
        if not isinstance(keys, dict):
            raise InvalidInput("the round carries no node keys", field="round_input.keys")
        hospitals = sorted(n for n in keys if n != params.payer)
        route = params.hospitals or {name: name for name in hospitals}
        cases = grouped_cases(ctx.con, params.grouping, ctx.consented_persons_sql())
        stays = None
        if params.readmissions and len(cases):
            flagged = flag_claims(cases, params.readmit_days)
            stays = set(flagged.loc[flagged["split_admission"], "visit_id"].astype(int))
        claims = claims_to_check(cases, params.evidence, stays)
        ctx.records_used = int(claims["person_id"].nunique()) if len(claims) else 0
        pseudonyms = self._pseudonyms(ctx, sorted(set(claims["person_id"].tolist())))
        queries: dict[str, list[dict[str, Any]]] = {name: [] for name in hospitals}
        index: list[dict[str, Any]] = []
        unrouted: Counter[str] = Counter()
        for visit, rows in claims.groupby("visit_id", sort=True):
            first = rows.iloc[0]
            node = route.get(str(first["hospital"]))
            psv = pseudonyms.get(int(first["person_id"]))
            if node not in queries or psv is None:
                unrouted[str(first["hospital"])] += 1
                continue
            q = len(queries[node])
            queries[node].append({"q": q, "psv": psv, "admitted": str(first["admitted"]),
                                  "discharged": str(first["discharged"]),
                                  "codes": sorted(set(rows["code"]))})
            index.append({"node": node, "q": q, "visit_id": int(visit),
                          "person_id": int(first["person_id"]),
                          "hospital": str(first["hospital"]),
                          "admitted": str(first["admitted"]),
                          "discharged": str(first["discharged"])})
        boxes = {name: seal(public_key(keys[name], f"round_input.keys.{name}"),
                            {"queries": queries[name]}) for name in hospitals}
        own = seal(key.private.public_key, {"claims": index, "unrouted": dict(unrouted)})
        return {"role": "payer", "boxes": boxes, "own": own}

    @staticmethod
    def _pseudonyms(ctx: LocalContext, persons: list[int]) -> dict[int, str]:
        if not persons:
            return {}
        rows = ctx.con.execute(
            "SELECT person_id, person_source_value FROM person "
            "WHERE person_id IN (SELECT unnest(CAST(? AS BIGINT[])))", [persons]).fetchall()
        return {int(pid): str(psv) for pid, psv in rows if psv}

    def _answer(self, ctx: LocalContext, params: EvidenceParams, key: BoxKey,
                round_input: dict[str, Any]) -> dict[str, Any]:
        boxes = round_input.get("boxes")
        if not isinstance(boxes, dict) or ctx.site not in boxes:
            raise InvalidInput(f"the round carries no queries for {ctx.site}",
                               field="round_input.boxes")
        letter = key.open(boxes[ctx.site], "round_input.boxes")
        queries = letter.get("queries") if isinstance(letter, dict) else None
        if not isinstance(queries, list):
            raise InvalidInput("the payer's message holds no query list",
                               field="round_input.boxes")
        answers, matched = check_claims(ctx.con, queries, params.evidence,
                                        ctx.consented_persons_sql())
        ctx.records_used = matched
        payer_key = public_key(round_input.get("payer_key"), "round_input.payer_key")
        return {"role": "hospital", "answer": seal(payer_key, {"answers": answers})}

    def _collect(self, ctx: LocalContext, params: EvidenceParams, key: BoxKey,
                 round_input: dict[str, Any]) -> dict[str, Any]:
        own = key.open(round_input.get("own"), "round_input.own")
        sealed = round_input.get("answers")
        if not isinstance(sealed, dict):
            raise InvalidInput("the round carries no answers", field="round_input.answers")
        replies: dict[str, dict[int, dict[str, str]]] = {}
        for node, box in sealed.items():
            letter = key.open(box, f"round_input.answers.{node}")
            replies[node] = {int(a["q"]): dict(a["answers"])
                             for a in (letter.get("answers") or [])}
        rules = params.evidence
        findings: list[dict[str, Any]] = []
        per_hospital: dict[str, Counter[str]] = {}
        per_rule: dict[str, Counter[str]] = {}
        for claim in own["claims"]:
            answers = replies.get(claim["node"], {}).get(claim["q"])
            if answers is None:
                continue  # that hospital did not answer (refused or failed)
            for code, answer in sorted(answers.items()):
                if answer not in ANSWERS:
                    raise InvalidInput(f"unknown answer {answer!r}", field="round_input.answers")
                rule = rules.rule_for(code)
                title = STAY_TITLE if code == STAY else \
                    rules.rules[rule].title if rule is not None else code
                findings.append({**{k: claim[k] for k in ("visit_id", "person_id", "hospital",
                                                          "admitted", "discharged")},
                                 "code": code, "rule": title, "finding": answer})
                per_rule.setdefault(title, Counter())[answer] += 1
            counts = per_hospital.setdefault(claim["hospital"], Counter())
            counts["claims"] += 1
            counts[_claim_answer(answers)] += 1
        if ctx.findings_sink is not None:
            ctx.findings_sink(FINDINGS_KIND, findings)
        k = ctx.min_cell_size

        def shown(count: int) -> int | None:
            return None if 0 < count < k else count

        return {
            "role": "payer", "k": k,
            "claims_checked": sum(c["claims"] for c in per_hospital.values()),
            "hospitals": [{"hospital": h, **{a: shown(c[a]) for a in ("claims", *ANSWERS)}}
                          for h, c in sorted(per_hospital.items())],
            "rules": [{"rule": r, **{a: shown(c[a]) for a in ANSWERS}}
                      for r, c in sorted(per_rule.items())],
            "not_asked": sum(own.get("unrouted", {}).values()),
            "answered_by": sorted(replies),
        }

    # --- the hub side ---------------------------------------------------------------

    def combine(
        self, partials: Mapping[str, dict[str, Any]], params: Params, state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, EvidenceParams)
        if params.payer not in partials:
            raise Refused(f"the payer node {params.payer} did not answer round {round}")
        hospitals = sorted(n for n in partials if n != params.payer)
        if round == 1:
            keys = {name: p.get("key") for name, p in partials.items()}
            if not hospitals:
                raise Refused("no hospital node answered")
            return NextRound({"step": 2, "keys": keys}, {"keys": keys})
        if round == 2:
            payer = partials[params.payer]
            boxes = {n: b for n, b in (payer.get("boxes") or {}).items() if n in hospitals}
            return NextRound({"step": 3, "boxes": boxes,
                              "payer_key": state["keys"][params.payer]},
                             {"own": payer.get("own"), "keys": state["keys"]})
        if round == 3:
            answers = {n: partials[n]["answer"] for n in hospitals if "answer" in partials[n]}
            return NextRound({"step": 4, "answers": answers, "own": state["own"]})
        rules = params.evidence
        return Final({
            **{k: v for k, v in partials[params.payer].items() if k != "role"},
            "payer": params.payer,
            "evidence_rules": {"name": rules.name, "version": rules.version,
                               "official": rules.official},
            "per_claim_answers": "kept on the payer node (payer findings)",
        })


register(EvidenceCheck())
