"""The node's meter for one execution: what it used, disclosure-controlled before it leaves.

Every task the node runs (studies, previews, record linkage alike) gets a meter, refused and
failed ones too; the agent seals it into the signed result envelope's ``meter`` field.
"""

from __future__ import annotations

import math

from healthspace.core.canonical import canonical_json
from healthspace.core.metering import Meter
from healthspace.core.models import TaskAssignment, TaskResult

PERSONS_BAND = 100  # a withheld node's persons are rounded up to this (the catalogue's rounding)


def released_persons(persons: int, k: int, *, secure: bool, own_count_released: bool,
                     noised: bool = False) -> tuple[int, int | None]:
    """``(persons, band)`` as the meter may carry them.

    A noised release (DP or obfuscated: ``persons`` is then the noised count the analysis
    released in clear) is metered as released, whatever its size.

    In clear, a count below ``k`` was suppressed and added nothing to the released result: 0.
    Under secure aggregation the node's records enter the network sum whatever their number,
    so a count the node does not release (withheld by policy, or below ``k``) is rounded up to
    a band of :data:`PERSONS_BAND`; the hub learns no more than the catalogue's rounding.
    """
    persons = max(int(persons), 0)
    if noised:
        return persons, None
    if persons >= k and (own_count_released or not secure):
        return persons, None
    if not secure or persons == 0:
        return 0, None
    return PERSONS_BAND * math.ceil(persons / PERSONS_BAND), PERSONS_BAND


def payload_bytes(result: TaskResult) -> int:
    """The size of the result payload as the envelope carries it (canonical JSON)."""
    return len(canonical_json(result.model_dump(mode="json")))


def build_meter(
    assignment: TaskAssignment,
    result: TaskResult,
    *,
    records_scanned: int,
    persons: int,
    seconds: float,
    epsilon: float,
    k: int,
    own_count_released: bool,
    noised: bool = False,
) -> Meter:
    shown, band = released_persons(persons, k, secure=assignment.secure is not None,
                                   own_count_released=own_count_released, noised=noised)
    return Meter(
        analysis=assignment.analysis,
        status=result.status,
        preview=assignment.preview,
        records_scanned=records_scanned,
        persons=shown,
        persons_band=band,
        seconds=round(max(seconds, 0.0), 6),
        bytes=payload_bytes(result),
        epsilon=epsilon,
    )
