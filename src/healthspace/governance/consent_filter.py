"""The consent filter applied on the node: which persons a computation for a purpose may use.

Built from consent records and the policy's default tier, the filter is the small set of
persons whose record *flips* the default (opt-outs in an opt-out regime, opt-ins in an opt-in
one). It serialises to JSON, so an iterative study can keep the snapshot of its first round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from healthspace.governance.consent import ConsentRecord, permits
from healthspace.governance.policy import ConsentTier


@dataclass(frozen=True)
class ConsentFilter:
    purpose: str
    default_permits: bool
    flip_source_values: frozenset[str] = frozenset()
    flip_person_ids: frozenset[int] = frozenset()

    @classmethod
    def build(
        cls, records: Iterable[ConsentRecord], default_tier: ConsentTier, purpose: str
    ) -> ConsentFilter:
        default = permits(default_tier, None, purpose)
        flip_psv: set[str] = set()
        flip_pid: set[int] = set()
        for record in records:
            if record.permits(purpose) != default:
                if record.person_source_value is not None:
                    flip_psv.add(record.person_source_value)
                elif record.person_id is not None:
                    flip_pid.add(record.person_id)
        return cls(purpose, default, frozenset(flip_psv), frozenset(flip_pid))

    @property
    def is_noop(self) -> bool:
        return self.default_permits and not self.flip_source_values and not self.flip_person_ids

    def to_json(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "default_permits": self.default_permits,
            "flip_source_values": sorted(self.flip_source_values),
            "flip_person_ids": sorted(self.flip_person_ids),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConsentFilter:
        return cls(
            purpose=str(data["purpose"]),
            default_permits=bool(data["default_permits"]),
            flip_source_values=frozenset(str(v) for v in data["flip_source_values"]),
            flip_person_ids=frozenset(int(v) for v in data["flip_person_ids"]),
        )
