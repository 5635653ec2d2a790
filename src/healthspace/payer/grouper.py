"""The grouper: an inpatient case → MDC → ADRG → DRG (severity split), and its DIP group.

1. **MDC** by the principal diagnosis (first matching MDC of the rule file);
2. **ADRG** within that MDC, in rule order: an ADRG matches when the principal diagnosis is
   in its diagnoses (if it lists any) and one of the case's procedures is in its procedures
   (if it lists any) — so procedure ADRGs listed first take surgical cases;
3. **DRG** = ADRG + ``1`` (an MCC secondary diagnosis), ``3`` (a CC) or ``5`` (neither);
   ``9`` for an ADRG that is not split. Secondary diagnoses of the principal's own ICD-10
   category never count (``exclude_same_category``). No MDC or ADRG: ``QY`` (ungroupable);
4. **DIP** = principal diagnosis to ``diagnosis_characters`` characters × the first core
   procedure of the case (codes in ``dip.procedures``, sorted), else ``conservative``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from healthspace.payer.rules import GroupingRules, _category

UNGROUPABLE = "QY"
CONSERVATIVE = "conservative"


@dataclass(frozen=True)
class Case:
    """One inpatient stay as the grouper sees it."""

    principal: str | None
    secondary: Sequence[str] = field(default_factory=tuple)
    procedures: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Grouping:
    mdc: str | None
    adrg: str | None
    drg: str
    severity: str  # mcc, cc, none, unsplit, ungroupable
    dip: str


def severity(rules: GroupingRules, principal: str, secondary: Iterable[str]) -> str:
    """``mcc`` if any counting secondary diagnosis is an MCC, else ``cc`` or ``none``."""
    own = _category(principal) if rules.severity.exclude_same_category else None
    counted = [code for code in secondary if code and _category(code) != own]
    if any(rules.sets["mcc"].matches(code) for code in counted):
        return "mcc"
    if any(rules.sets["cc"].matches(code) for code in counted):
        return "cc"
    return "none"


def dip_group(rules: GroupingRules, case: Case) -> str:
    if not case.principal:
        return UNGROUPABLE
    diagnosis = case.principal[:rules.dip.diagnosis_characters]
    core = sorted(p for p in case.procedures if rules.sets["dip"].matches(p))
    return f"{diagnosis}:{core[0] if core else CONSERVATIVE}"


def group(rules: GroupingRules, case: Case) -> Grouping:
    sets = rules.sets
    dip = dip_group(rules, case)
    mdc = next((m.code for m in rules.mdc if sets[f"mdc:{m.code}"].matches(case.principal)),
               None)
    if case.principal is None or mdc is None:
        return Grouping(mdc, None, UNGROUPABLE, "ungroupable", dip)
    for adrg in rules.adrg:
        if adrg.mdc != mdc:
            continue
        if adrg.diagnoses and not sets[f"dx:{adrg.code}"].matches(case.principal):
            continue
        if adrg.procedures and not any(sets[f"px:{adrg.code}"].matches(p)
                                       for p in case.procedures):
            continue
        if not adrg.split:
            return Grouping(mdc, adrg.code, f"{adrg.code}9", "unsplit", dip)
        level = severity(rules, case.principal, case.secondary)
        suffix = {"mcc": "1", "cc": "3", "none": "5"}[level]
        return Grouping(mdc, adrg.code, f"{adrg.code}{suffix}", level, dip)
    return Grouping(mdc, None, UNGROUPABLE, "ungroupable", dip)
