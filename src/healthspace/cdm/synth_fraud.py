"""Fraud injected into the synthetic payer's claims, and the truth a screening is scored by.

Only the payer's copy of a listed hospital's inpatient claims is touched; the hospitals' own
records stay as they are, so they hold no evidence for anything added here:

* ``split_admission``: a second stay of the same person, principal diagnosis and procedure,
  admitted 1-10 days after the original discharge, 1-5 days long, charged 40-70 % of the
  original; the new stay is the labelled claim;
* ``duplicate_billing``: an exact copy of a claim (dates, codes, drugs, charge); the copy is
  labelled;
* ``upcoded``: a severity-raising secondary diagnosis (N18.5, I50.0 or A41.9) that the person
  shows no sign of anywhere, added to a claim the sample grouping rules give no CC/MCC, in an
  ADRG split by severity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from healthspace.cdm.synth_events import IP, Rows, Visits
from healthspace.cdm.synth_records import drg_groups, procedures
from healthspace.cdm.synth_tables import Chunk, CsvSink, strings
from healthspace.cdm.synth_vocab import CODE_STRINGS, CODES, ix
from healthspace.payer.grouper import Case, group
from healthspace.payer.rules import GroupingRules, load_rules

PATTERNS = ("split_admission", "duplicate_billing", "upcoded")
SPLIT, DUPLICATE, UPCODED = range(3)
SEVERITY_CODES = ("N18.5", "I50.0", "A41.9")
MAX_GAP, MAX_LOS = 10, 5
# A split stay ends by discharge + 15 and the screen looks 15 days on from there
# (readmit_days), so the person's next real stay must start later or it would be flagged too.
QUIET_DAYS = MAX_GAP + MAX_LOS + 15
_DAY_SPAN = 1_000_000  # sort key person * span + day; days since 1970 stay far below it
FRAUD_COLUMNS = (
    ("pattern", pa.string()), ("hospital", pa.string()), ("person_source_value", pa.string()),
    ("national_id", pa.string()), ("admitted", pa.date32()), ("discharged", pa.date32()),
    ("code", pa.string()), ("payer_visit_occurrence_id", pa.int64()),
    ("original_visit_occurrence_id", pa.int64()),
)


class FraudSpecError(ValueError):
    """A bad :class:`FraudSpec` setting; ``field`` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FraudSpec:
    """What to inject, and where; no ``hospitals`` means the network's last hospital.

    ``rate`` is the share of the listed hospitals' inpatient claims that get a split admission
    and, drawn separately, the share that get a duplicate; ``upcode_share`` the share of those
    claims without a CC/MCC diagnosis that get one added.
    """

    rate: float = 0.03
    hospitals: tuple[str, ...] = ()
    patterns: tuple[str, ...] = PATTERNS
    upcode_share: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "hospitals", tuple(self.hospitals))
        object.__setattr__(self, "patterns", tuple(dict.fromkeys(self.patterns)))
        for name in ("rate", "upcode_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FraudSpecError(f"{name} must be between 0 and 1, got {value}", name)
        unknown = [p for p in self.patterns if p not in PATTERNS]
        if unknown or not self.patterns:
            what = f"unknown pattern(s) {', '.join(unknown)}" if unknown else "no pattern"
            raise FraudSpecError(f"{what}; choose from {', '.join(PATTERNS)}", "patterns")

    def for_network(self, names: Sequence[str]) -> FraudSpec:
        """This spec with its hospitals checked against ``names`` (default: the last one)."""
        hospitals = tuple(dict.fromkeys(self.hospitals or names[-1:]))
        unknown = [h for h in hospitals if h not in names]
        if unknown:
            raise FraudSpecError(f"unknown hospital(s) {', '.join(unknown)}; the network has "
                                 f"{', '.join(names)}", "hospitals")
        return replace(self, hospitals=hospitals)

    def settings(self, seed: int) -> dict[str, Any]:
        return {"rate": self.rate, "hospitals": list(self.hospitals),
                "patterns": list(self.patterns), "upcode_share": self.upcode_share,
                "seed": seed}


@dataclass
class Labels:
    """One chunk's injected claims, by visit index in the tampered chunk."""

    pattern: np.ndarray  # index into PATTERNS
    visit: np.ndarray  # the labelled claim
    original: np.ndarray  # the claim it was derived from (itself when upcoded)
    code: np.ndarray  # the added code's index (upcoded) or -1


def tamper(rng: np.random.Generator, c: Chunk, spec: FraudSpec,
           sites: np.ndarray) -> tuple[Chunk, Labels]:
    """The payer's view of chunk ``c`` with fraud injected into claims at hospital ``sites``."""
    v = c.visits
    pool = np.flatnonzero((v.kind == IP) & c.people.insured[v.person] & np.isin(v.site, sites))
    n, k = len(pool), round(spec.rate * len(pool))
    gap, los = rng.integers(1, MAX_GAP + 1, n), rng.integers(1, MAX_LOS + 1, n)
    share = rng.uniform(0.4, 0.7, n)
    free = np.ones(n, dtype=bool)
    split = dup = np.zeros(0, dtype=np.int64)  # positions in pool
    if "split_admission" in spec.patterns:
        split = _choose(rng, np.flatnonzero(_splittable(c, pool, gap, los)), k)
        free[split] = False
    if "duplicate_billing" in spec.patterns:
        dup = _choose(rng, np.flatnonzero(free), k)
        free[dup] = False
    up_visit = up_code = np.zeros(0, dtype=np.int64)
    if "upcoded" in spec.patterns:
        up_visit, up_code = _upcode(rng, c, pool[free], spec.upcode_share)
    src = np.concatenate([pool[split], pool[dup]])
    after = v.end[pool[split]] + gap[split]
    stays = (after, after + los[split], np.round(c.total[pool[split]] * share[split]))
    tampered = _extend(c, pool[split], stays, pool[dup], up_visit, up_code)
    copies = len(v) + np.arange(len(src))
    labels = Labels(
        pattern=np.repeat([SPLIT, DUPLICATE, UPCODED], [len(split), len(dup), len(up_visit)]),
        visit=np.r_[copies, up_visit], original=np.r_[src, up_visit],
        code=np.r_[np.full(len(src), -1), up_code].astype(np.int64),
    )
    return tampered, labels


def _choose(rng: np.random.Generator, candidates: np.ndarray, k: int) -> np.ndarray:
    return np.sort(rng.choice(candidates, min(k, len(candidates)), replace=False))


def _splittable(c: Chunk, pool: np.ndarray, gap: np.ndarray, los: np.ndarray) -> np.ndarray:
    """Claims with no other stay of the person starting from admission to QUIET_DAYS after
    discharge, whose split stay ends within the person's observation."""
    v = c.visits
    ip = np.flatnonzero(v.kind == IP)
    keys = v.person[ip] * _DAY_SPAN + v.start[ip]  # visits are sorted by person, then date
    base = v.person[pool] * _DAY_SPAN
    lo = np.searchsorted(keys, base + v.start[pool], "left")
    hi = np.searchsorted(keys, base + v.end[pool] + QUIET_DAYS, "right")
    fits = v.end[pool] + gap + los <= c.people.t1[v.person[pool]]
    return (hi - lo == 1) & fits


def _extend(c: Chunk, split: np.ndarray, stays: tuple[np.ndarray, np.ndarray, np.ndarray],
            dup: np.ndarray, up_visit: np.ndarray, up_code: np.ndarray) -> Chunk:
    """``c`` plus a later stay for each visit in ``split`` (start, end, total charge in
    ``stays``), a copy of each visit in ``dup`` and the upcoded diagnoses. New stays carry the
    original's diagnoses and procedure; copies also its drugs and charge."""
    v, nv = c.visits, len(c.visits)
    src = np.r_[split, dup]
    start, end = np.r_[stays[0], v.start[dup]], np.r_[stays[1], v.end[dup]]
    visits = Visits(
        person=np.r_[v.person, v.person[src]], start=np.r_[v.start, start],
        end=np.r_[v.end, end], kind=np.r_[v.kind, v.kind[src]],
        purpose=np.r_[v.purpose, v.purpose[src]], dx=np.r_[v.dx, v.dx[src]],
        proc=np.r_[v.proc, v.proc[src]], first=np.r_[v.first, v.first[src]],
        site=np.r_[v.site, v.site[src]],
    )
    copy_of = np.full(nv, -1, dtype=np.int64)
    copy_of[src] = nv + np.arange(len(src))
    added = Rows(up_visit, up_code, np.ones(len(up_visit)), np.zeros(len(up_visit)))
    cond = _concat(c.cond, _copy(c.cond, copy_of, src), added)
    total = stays[2].astype(np.int64)
    fund = np.round(total * (c.fund[split] / c.total[split])).astype(np.int64)
    return replace(
        c, visits=visits, cond=cond, drug=_concat(c.drug, _copy(c.drug, copy_of, dup)),
        proc=procedures(visits), drg=drg_groups(visits, cond),
        total=np.r_[c.total, total, c.total[dup]], fund=np.r_[c.fund, fund, c.fund[dup]],
    )


def _copy(rows: Rows, copy_of: np.ndarray, which: np.ndarray) -> Rows:
    """The rows of visits ``which``, re-pointed at those visits' copies."""
    keep = np.flatnonzero(np.isin(rows.visit, which))
    return Rows(copy_of[rows.visit[keep]], rows.code[keep], rows.value[keep],
                rows.quantity[keep])


def _concat(*parts: Rows) -> Rows:
    return Rows(*(np.concatenate([getattr(p, f) for p in parts])
                  for f in ("visit", "code", "value", "quantity")))


def _upcode(rng: np.random.Generator, c: Chunk, cand: np.ndarray,
            share: float) -> tuple[np.ndarray, np.ndarray]:
    """(visit, added code) of the upcoded claims among ``cand``."""
    v, cond = c.visits, c.cond
    severe, category, added = _severity_tables()
    counts = (cond.value == 1) & severe[cond.code] & (category[cond.code]
                                                      != category[v.dx[cond.visit]])
    has_cc = np.zeros(len(v), dtype=bool)
    has_cc[cond.visit[counts]] = True
    plain = cand[_split_adrg(v.dx[cand], v.proc[cand]) & ~has_cc[cand]]
    allowed = _unsupported(c)[v.person[plain]] & (
        category[added][None, :] != category[v.dx[plain]][:, None])
    pick = _choose(rng, np.flatnonzero(allowed.any(axis=1)), round(share * len(plain)))
    draw = np.where(allowed[pick], rng.random((len(pick), len(added))), -1.0)
    return plain[pick], added[np.argmax(draw, axis=1)]


def _unsupported(c: Chunk) -> np.ndarray:
    """Persons x SEVERITY_CODES: True where nothing in the person's records supports it."""
    p, v = c.people, c.visits

    def having(rows: Rows, mask: np.ndarray) -> np.ndarray:
        out = np.zeros(p.n, dtype=bool)
        out[v.person[rows.visit[mask]]] = True
        return out

    kidney = _codes_like(("N18", "E11.21", "E11.22"))
    low_egfr = (c.lab.code == ix("33914-3")) & (c.lab.value < 15)
    ckd = having(c.cond, kidney[c.cond.code]) | having(c.lab, low_egfr) | having(
        c.proc, c.proc.code == ix("5A1D70Z"))
    hf = having(c.cond, _codes_like(("I50",))[c.cond.code]) | having(
        c.drug, c.drug.code == ix("C03CA01"))
    sepsis = having(c.cond, _codes_like(("A41",))[c.cond.code])
    return ~np.column_stack([ckd, hf, sepsis])


def _codes_like(prefixes: tuple[str, ...]) -> np.ndarray:
    return np.array([code.startswith(prefixes) for _, code, _ in CODES])


@cache
def _rules() -> GroupingRules:
    return load_rules()


@cache
def _severity_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code: CC/MCC in the sample rules, ICD-10 category id; and the added codes."""
    rules = _rules()
    codes = [code for _, code, _ in CODES]
    severe = np.array([rules.sets["mcc"].matches(x) or rules.sets["cc"].matches(x)
                       for x in codes])
    _, category = np.unique([x.split(".")[0][:3] for x in codes], return_inverse=True)
    return severe, category, np.array([ix(x) for x in SEVERITY_CODES], dtype=np.int64)


def _split_adrg(dx: np.ndarray, proc: np.ndarray) -> np.ndarray:
    """Whether the sample rules put (principal, procedure) into an ADRG split by severity."""
    pairs = dx * (len(CODES) + 1) + proc + 1
    unique, inverse = np.unique(pairs, return_inverse=True)
    split = np.array([_is_split(int(u) // (len(CODES) + 1), int(u) % (len(CODES) + 1) - 1)
                      for u in unique], dtype=bool)
    return split[inverse.reshape(-1)] if len(pairs) else np.zeros(0, dtype=bool)


@cache
def _is_split(dx: int, proc: int) -> bool:
    procedures_ = (CODES[proc][1],) if proc >= 0 else ()
    return group(_rules(), Case(CODES[dx][1], (), procedures_)).severity == "none"


class FraudLog:
    """``_truth/fraud.csv``, written chunk by chunk, and the number of claims per pattern."""

    def __init__(self, path: Path, names: Sequence[str], spec: FraudSpec) -> None:
        self._sink = CsvSink(path, FRAUD_COLUMNS)
        self._names = pa.array(list(names))
        self.counts = dict.fromkeys(spec.patterns, 0)

    def add(self, c: Chunk, labels: Labels, vid: np.ndarray) -> None:
        """Log ``labels`` of tampered chunk ``c``; ``vid`` maps its visits to payer ids."""
        order = np.argsort(vid[labels.visit], kind="stable")
        visit = labels.visit[order]
        person = pa.array(c.visits.person[visit])
        self._sink.write(len(visit), {
            "pattern": strings(pa.array(PATTERNS), labels.pattern[order]),
            "hospital": strings(self._names, c.visits.site[visit]),
            "person_source_value": c.pseudonym.take(person),
            "national_id": c.national_id.take(person),
            "admitted": c.visits.start[visit], "discharged": c.visits.end[visit],
            "code": strings(CODE_STRINGS, labels.code[order]),
            "payer_visit_occurrence_id": vid[visit],
            "original_visit_occurrence_id": vid[labels.original[order]],
        })
        for j, name in enumerate(PATTERNS):
            if name in self.counts:
                self.counts[name] += int((labels.pattern == j).sum())

    def close(self) -> None:
        self._sink.close()


def write_fraud_json(folder: Path, spec: FraudSpec, seed: int, counts: dict[str, int]) -> None:
    doc = {"settings": spec.settings(seed), "counts": counts,
           "upcoding_hospitals": list(spec.hospitals) if "upcoded" in spec.patterns else []}
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    (folder / "fraud.json").write_text(text, encoding="utf-8")
