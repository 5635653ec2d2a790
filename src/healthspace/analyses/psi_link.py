"""Private record linkage between two nodes: how many cohort patients they share (DH-PSI).

The two nodes run Diffie–Hellman private set intersection (:mod:`healthspace.privacy.psi`)
over the national ids of their consented cohort persons, taken from each node's identity
vault; the hub only relays blinded points between rounds and learns nothing but the set
sizes. Each node derives its secret scalar from its own key and the study, so it keeps no
state between rounds:

1. the *sender* sends ``[b]H(y)`` for its ids; the *receiver* (``params.receiver``) sends
   ``[a]H(x)``;
2. the hub relays ``[a]H(x)`` to the sender, which answers ``[b][a]H(x)`` (sorted in ``size``
   mode, in order in ``membership`` mode);
3. the hub relays ``[b]H(y)`` and the answers to the receiver, which matches
   ``[a][b]H(y)`` against them.

The consumer receives the intersection size and both set sizes, each released only when at
least the minimum cell size (else ``"<k"``). In ``membership`` mode the receiver also keeps,
in its own state and never in the result, which of its persons are shared.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from healthspace.analyses.base import Analysis, Final, LocalContext, NextRound, Params
from healthspace.analyses.registry import register
from healthspace.core.errors import InvalidInput, Refused
from healthspace.privacy.disclosure import release_count
from healthspace.privacy.psi import PsiReceiver, PsiSender
from healthspace.privacy.psi_crypto import derive_scalar
from healthspace.privacy.psi_wire import Mode

MAX_FRAMES = 1000  # 100 million ids at the library's batch size


class PsiLinkParams(Params):
    receiver: str = Field(min_length=1, max_length=64,
                          description="the node that learns the result (and, in membership "
                                      "mode, which of its own persons are shared)")
    mode: Literal["size", "membership"] = "size"
    group: Literal["ed25519", "x25519"] = Field(
        default="ed25519", description="ed25519: prime-order group (default); x25519: faster, "
                                       "leaks one curve/twist bit per id (docs/psi.md)")


def _frames(items: Any, name: str) -> list[bytes]:
    if not isinstance(items, list) or len(items) > MAX_FRAMES:
        raise InvalidInput(f"{name} must be a list of at most {MAX_FRAMES} frames",
                           field=f"round_input.{name}")
    try:
        return [base64.b64decode(item, validate=True) for item in items]
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} holds a frame that is not base64",
                           field=f"round_input.{name}") from None


def _b64(frames: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(f).decode("ascii") for f in frames]


class PsiLink(Analysis):
    name = "psi_link"
    title = "Shared patients between two nodes (private set intersection)"
    params_model = PsiLinkParams
    requires_cohort = True
    max_rounds = 3

    def check_nodes(self, params: Params, nodes: Sequence[str]) -> None:
        assert isinstance(params, PsiLinkParams)
        if len(nodes) != 2:
            raise InvalidInput("private set intersection runs between exactly two nodes",
                               field="nodes")
        if params.receiver not in nodes:
            raise InvalidInput(f"receiver {params.receiver!r} is not one of the study's nodes "
                               f"({', '.join(nodes)})", field="params.receiver")

    def _ids(self, ctx: LocalContext) -> tuple[list[str], dict[str, int]]:
        """The cohort's national ids (normalised, sorted) and id -> local person_id."""
        if ctx.linkage is None:
            raise Refused("this node has no identity vault for record linkage")
        sql, args = ctx.cohort_persons_sql()
        persons = [int(r[0]) for r in
                   ctx.con.execute(f"SELECT DISTINCT person_id FROM ({sql}) AS c", args).fetchall()]
        ctx.records_used = len(persons)
        found = ctx.linkage.national_ids(persons)
        by_id = {nid.strip().upper(): pid for pid, nid in found.items() if nid.strip()}
        if 0 < len(by_id) < ctx.min_cell_size:
            raise Refused(f"only {len(by_id)} linkable persons, below the minimum cell size "
                          f"{ctx.min_cell_size}")
        return sorted(by_id), by_id

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert isinstance(params, PsiLinkParams)
        receiver = ctx.site == params.receiver
        role = "receiver" if receiver else "sender"
        step = 1 if round_input is None else int(round_input.get("step", 0))
        if (step == 2 and receiver) or (step == 3 and not receiver):
            return {"role": role, "idle": True}
        ids, by_id = self._ids(ctx)
        assert ctx.linkage is not None  # _ids refused otherwise
        scalar = derive_scalar(ctx.linkage.study_secret(f"psi/{params.group}"), params.group)
        mode = Mode.MEMBERSHIP if params.mode == "membership" else Mode.SIZE
        if not receiver:
            sender = PsiSender(ids, mode, group=params.group, scalar=scalar, workers=1,
                               assume_distinct=True)
            try:
                if step == 1:
                    return {"role": role, "frames": _b64(list(sender.blinded_frames()))}
                requests = _frames((round_input or {}).get("requests"), "requests")
                answers = [reply for frame in requests for reply in sender.answer(frame)]
                if not sender.done:
                    raise InvalidInput("the receiver's request frames are incomplete",
                                       field="round_input.requests")
                return {"role": role, "frames": _b64(answers)}
            finally:
                sender.close()
        psi = PsiReceiver(ids, mode, group=params.group, scalar=scalar, workers=1,
                          assume_distinct=True)
        try:
            requests = list(psi.request_frames())  # the same frames every time: same scalar
            if step == 1:
                return {"role": role, "frames": _b64(requests)}
            for frame in _frames((round_input or {}).get("offer"), "offer"):
                psi.absorb_offer(frame)
            for frame in _frames((round_input or {}).get("answers"), "answers"):
                psi.absorb_answer(frame)
            result = psi.result()
        finally:
            psi.close()
        if result.members is not None and ctx.linkage.keep_links is not None:
            ctx.linkage.keep_links(sorted(by_id[m] for m in result.members))
        k = ctx.min_cell_size
        return {"role": role, "min_cell_size": k,
                "intersection": release_count(result.size, k),
                "receiver_count": release_count(result.receiver_count, k),
                "sender_count": release_count(result.sender_count, k)}

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        assert isinstance(params, PsiLinkParams)
        if len(partials) != 2:
            raise Refused(f"private set intersection needs both nodes; round {round} has "
                          f"{', '.join(sorted(partials)) or 'none'}")
        roles = {p.get("role"): name for name, p in partials.items()}
        if set(roles) != {"sender", "receiver"} or roles["receiver"] != params.receiver:
            raise InvalidInput("the nodes did not take the sender and receiver roles",
                               field="params.receiver")
        sender, receiver = partials[roles["sender"]], partials[roles["receiver"]]
        if round == 1:
            return NextRound({"step": 2, "requests": receiver["frames"]},
                             {"offer": sender["frames"]})
        if round == 2:
            return NextRound({"step": 3, "offer": state["offer"], "answers": sender["frames"]})
        return Final({
            "mode": params.mode,
            "group": params.group,
            "receiver": roles["receiver"],
            "sender": roles["sender"],
            "intersection": receiver["intersection"],
            "sites": {roles["receiver"]: receiver["receiver_count"],
                      roles["sender"]: receiver["sender_count"]},
            "min_cell_size": receiver["min_cell_size"],
            "members_kept_at": roles["receiver"] if params.mode == "membership" else None,
        })


register(PsiLink())
