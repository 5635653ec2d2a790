"""Secure aggregation around the analysis protocol: mask a node's sums, combine the total.

A node's masked partial is ``{"secure": {"public": ..., "integer": [...], "masked": ...}}``:
``masked`` is a :class:`~healthspace.privacy.secagg.MaskedPayload` (binary, base64) whose
vectors only the sum over every node of the round can decode. The hub (or the simulation)
calls :func:`combine_masked`; a missing node raises
:class:`~healthspace.privacy.secagg.DropoutError` and the round is rerun without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from healthspace.analyses.base import (
    Analysis,
    Final,
    LocalContext,
    NextRound,
    Params,
    Summable,
)
from healthspace.core.encoding import decode_array, encode_array
from healthspace.core.errors import InvalidInput
from healthspace.privacy.secagg import MaskedPayload, aggregate, unmask_sum

KEY = "secure"

# What a node calls to turn its Summable into the partial it sends.
Masker = Callable[[Summable], dict[str, Any]]


def is_masked(partial: Mapping[str, Any] | None) -> bool:
    return bool(partial) and isinstance(partial.get(KEY), dict)  # type: ignore[union-attr]


def pack(summable: Summable, payload: MaskedPayload) -> dict[str, Any]:
    """The partial a node sends: the public part in clear, the sums masked."""
    return {KEY: {"public": summable.public, "integer": sorted(summable.integer),
                  "masked": payload.model_dump(mode="json")}}


def combine_masked(
    impl: Analysis,
    partials: Mapping[str, Mapping[str, Any]],
    params: Params,
    state: dict[str, Any],
    round: int,
) -> Final | NextRound:
    """Add the nodes' masked payloads, decode the network sums and call ``combine_secure``.

    Raises DropoutError (naming the nodes) when a roster node's payload is missing.
    """
    payloads: list[MaskedPayload] = []
    publics: dict[str, dict[str, Any]] = {}
    integer: set[str] = set()
    for name in sorted(partials):
        part = partials[name]
        if not is_masked(part):
            raise InvalidInput(f"node {name} sent an unmasked partial in a secure round",
                               field="partial")
        body = part[KEY]
        payload = MaskedPayload.model_validate(body["masked"])
        if payload.node != name:
            raise InvalidInput(f"node {name} sent a payload labelled {payload.node}",
                               field="partial")
        payloads.append(payload)
        publics[name] = dict(body.get("public") or {})
        integer.update(body.get("integer") or [])
    sums = unmask_sum(aggregate(payloads), integer=integer)
    return impl.combine_secure(sums, publics, params, state, round)


def clear_partial(summable: Summable) -> dict[str, Any]:
    """A Summable sent in clear (no secure aggregation): public part and encoded sums."""
    return {"public": summable.public,
            "sums": {label: encode_array(value) for label, value in summable.sums.items()}}


def sum_clear(
    partials: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The network sums and the public parts of partials made by :func:`clear_partial`."""
    sums: dict[str, Any] = {}
    for name in sorted(partials):
        for label, raw in partials[name]["sums"].items():
            value = decode_array(raw)
            sums[label] = sums[label] + value if label in sums else value
    return sums, {name: dict(partials[name].get("public") or {}) for name in partials}


class SummedAnalysis(Analysis):
    """An analysis whose every partial is a :class:`Summable`: in clear it travels encoded
    (:func:`clear_partial`) and ``combine`` sums it, so clear and secure rounds share
    ``combine_secure``. Subclasses implement ``local_secure`` and ``combine_secure``."""

    secure = True

    def local(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> dict[str, Any]:
        return clear_partial(self.local_secure(ctx, params, round_input))

    def combine(
        self, partials: Mapping[str, dict[str, Any]], params: Params, state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        sums, publics = sum_clear(partials)
        return self.combine_secure(sums, publics, params, state, round)
