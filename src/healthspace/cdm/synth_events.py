"""Visits, and the diagnoses, drugs, labs and procedures recorded at them, from latent timelines.

Every clinical row hangs off a visit and carries its date, so "what a site knows" is exactly
the visits held there. Chronic diseases produce a first (index) visit and Poisson follow-ups;
acute events produce admissions; NSAID courses produce monthly dispensing visits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from healthspace.cdm.synth_people import NEVER, YEAR, People
from healthspace.cdm.synth_vocab import ix

IP, OP, ER = 0, 1, 2
VISIT_CONCEPTS = np.array([9201, 9202, 9203], dtype=np.int64)  # by kind: IP, OP, ER
VISIT_SOURCE = ("IP", "OP", "ER")

# Why a visit happened; drives which drugs, labs and procedures it records.
GENERAL, HTN, DM, CKD, HF, AMI, LC, CHEMO, PNEU, GIB, NSAID = range(11)

_MINOR = (["J06.9", "K29.7", "R51", "M54.5", "M17.9"], [0.35, 0.2, 0.15, 0.15, 0.15])
_PNEU = (["J18.0", "J18.1", "J18.9"], [0.2, 0.2, 0.6])


@dataclass
class Visits:
    """Visit rows of one chunk, sorted by person then date (``person`` indexes People)."""

    person: np.ndarray
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray
    purpose: np.ndarray
    dx: np.ndarray  # principal diagnosis (code index)
    proc: np.ndarray  # procedure code index or -1
    first: np.ndarray  # index visit of a disease: its labs are always measured
    site: np.ndarray

    def __len__(self) -> int:
        return len(self.person)


@dataclass
class Rows:
    """Rows recorded at visits (sorted by visit).

    ``value`` is the lab result, the drug's days supply, or for diagnoses 1 = secondary
    (comorbidity) and 0 = principal; ``quantity`` is the number of drug units dispensed.
    """

    visit: np.ndarray
    code: np.ndarray
    value: np.ndarray
    quantity: np.ndarray

    def __len__(self) -> int:
        return len(self.visit)


class _VisitList:
    """Collects visit parts; scalars broadcast to the part's length."""

    _FIELDS = ("person", "start", "kind", "purpose", "dx", "los", "proc", "first", "site")

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, person: np.ndarray, start: np.ndarray, purpose: int, dx: object, *,
            kind: object = OP, los: object = 0, proc: object = -1, first: object = False,
            site: object = -1) -> None:
        n = len(person)
        values = (person, start, kind, purpose, dx, los, proc, first, site)
        part = {k: np.broadcast_to(np.asarray(v), (n,)) for k, v in zip(self._FIELDS, values,
                                                                          strict=True)}
        part["start"] = np.floor(part["start"]).astype(np.int64)
        self.parts.append(part)

    def concat(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self._FIELDS}


def _pick(rng: np.random.Generator, choice: tuple[list[str], list[float]], n: int) -> np.ndarray:
    codes = np.array([ix(c) for c in choice[0]], dtype=np.int64)
    return codes[rng.choice(len(codes), n, p=choice[1])]


def _los(rng: np.random.Generator, p: People, idx: np.ndarray, base: int,
         mean: float) -> np.ndarray:
    """Length of stay in days (1-30); the tertiary centre keeps people ~20% longer."""
    days = (base + rng.geometric(1 / mean, len(idx))) * np.where(p.tertiary[idx], 1.2, 1.0)
    return np.clip(np.round(days), 1, 30).astype(np.int64)


def _first(p: People, onset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Persons whose disease shows up in the window, and the day it first does.

    Incident cases show up at onset; prevalent ones on the entry day, as history taken at the
    first visit (so baseline comorbidity is visible at entry, not mistaken for incidence).
    """
    first = np.where(onset < p.t0, p.t0, onset)
    idx = np.flatnonzero((onset < NEVER) & (first <= p.t1))
    return idx, np.floor(first[idx])


def _follow(rng: np.random.Generator, p: People, idx: np.ndarray, since: np.ndarray,
            rate: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Poisson(rate per year) visits spread uniformly over [since, t1] for persons ``idx``."""
    span = np.maximum(p.t1[idx] - since, 0.0)
    counts = rng.poisson(np.asarray(rate) * span / YEAR)
    rep = np.repeat(np.arange(len(idx)), counts)
    return idx[rep], since[rep] + rng.random(len(rep)) * span[rep]


def dm_code(p: People, idx: np.ndarray, when: np.ndarray) -> np.ndarray:
    """What a diabetes visit is coded as: complication, E11.9, or R73.9 before E11 is coded."""
    plain = np.where(when < np.floor(p.t["dm_dx"][idx]), ix("R73.9"), ix("E11.9"))
    return np.where(p.t["comp"][idx] < when + 1, p.a["comp_code"][idx], plain)


def _ckd_code(p: People, idx: np.ndarray) -> np.ndarray:
    return ix("N18.3") + p.a["ckd_stage"][idx] - 3


def _chronic_visits(rng: np.random.Generator, p: People, v: _VisitList) -> None:
    t, a = p.t, p.a
    idx, day = _first(p, t["htn"])
    v.add(idx, day, HTN, ix("I10"), first=True)
    v.add(*_follow(rng, p, idx, day, 2.0), HTN, ix("I10"))

    # Diabetes: treatment-start visit, then (if coding lags) the first-E11 visit, then care.
    idx, day = _first(p, t["dm"])
    v.add(idx, day, DM, dm_code(p, idx, day), first=True)
    dx_day = np.floor(t["dm_dx"][idx])
    lag = np.flatnonzero((dx_day > day) & (dx_day <= p.t1[idx]))
    v.add(idx[lag], dx_day[lag], DM, dm_code(p, idx[lag], dx_day[lag]), first=True)
    comp = np.floor(t["comp"][idx])
    new = np.flatnonzero((comp > day) & (comp <= p.t1[idx]))
    v.add(idx[new], comp[new], DM, a["comp_code"][idx[new]], first=True)
    who, when = _follow(rng, p, idx, day, 3.0)
    v.add(who, when, DM, dm_code(p, who, np.floor(when)))

    idx, day = _first(p, t["ckd"])
    dialysis = np.where(a["ckd_stage"] == 5, ix("5A1D70Z"), -1)
    v.add(idx, day, CKD, _ckd_code(p, idx), first=True, proc=dialysis[idx])
    who, when = _follow(rng, p, idx, day, np.where(a["ckd_stage"][idx] == 5, 12.0, 3.0))
    v.add(who, when, CKD, _ckd_code(p, who), proc=dialysis[who])


def _cardio_cancer_visits(rng: np.random.Generator, p: People, v: _VisitList) -> None:
    t, a, tert = p.t, p.a, p.tertiary
    idx, day = _first(p, t["hf"])
    incident = t["hf"][idx] >= p.t0[idx]
    admit = incident & (rng.random(len(idx)) < np.where(tert[idx], 0.7, 0.5))
    v.add(idx, day, HF, a["hf_code"][idx], kind=np.where(admit, IP, OP),
          los=np.where(admit, _los(rng, p, idx, 3, 5), 0), first=True)
    who, when = _follow(rng, p, idx, day, 3.0)
    v.add(who, when, HF, a["hf_code"][who])
    who, when = _follow(rng, p, idx, day + 30, 0.3)  # readmissions
    v.add(who, when, HF, a["hf_code"][who], kind=IP, los=_los(rng, p, who, 3, 5))

    idx, day = _first(p, t["ami"])
    incident = t["ami"][idx] >= p.t0[idx]
    pci = incident & (rng.random(len(idx)) < np.where(tert[idx], 0.75, 0.4))
    v.add(idx[incident], day[incident], AMI, a["ami_code"][idx[incident]], kind=IP,
          los=_los(rng, p, idx[incident], 3, 4), proc=np.where(pci, ix("027034Z"), -1)[incident],
          first=True)
    v.add(idx[~incident], day[~incident], AMI, ix("I25.2"), first=True)
    v.add(*_follow(rng, p, idx, day + 14, 2.0), AMI, ix("I25.2"))

    idx, day = _first(p, t["lc"])
    incident = t["lc"][idx] >= p.t0[idx]
    resect = incident & (rng.random(len(idx)) < 0.25)
    v.add(idx, day, LC, a["lc_code"][idx], kind=np.where(incident, IP, OP),
          los=np.where(incident, _los(rng, p, idx, 5, 6), 0),
          proc=np.where(resect, ix("0BTC4ZZ"), -1), first=True)
    who, when = _follow(rng, p, idx, day, 4.0)
    v.add(who, when, LC, a["lc_code"][who])
    cycles = np.where(incident, a["chemo_cycles"][idx], 0)
    who = np.repeat(idx, cycles)
    when = np.repeat(day, cycles) + 14 + 21 * _ranks(cycles)
    v.add(who, when, CHEMO, a["lc_code"][who], kind=IP, los=1 + rng.integers(0, 3, len(who)),
          proc=ix("3E03305"))


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each count c, concatenated (the k-th repeat of ``np.repeat(x, counts)``)."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _acute_visits(rng: np.random.Generator, p: People, v: _VisitList) -> None:
    t, tert = p.t, p.tertiary
    everyone = np.arange(p.n)
    rate = 0.012 * np.exp(0.05 * (p.age0 - 60)) * np.where(tert, 1.5, 1.0)
    who, when = _follow(rng, p, everyone, p.t0.astype(float), rate)
    admit = rng.random(len(who)) < np.where(tert[who], 0.6, 0.4)
    v.add(who, when, PNEU, _pick(rng, _PNEU, len(who)), kind=np.where(admit, IP, OP),
          los=np.where(admit, _los(rng, p, who, 2, 5), 0),
          proc=np.where(rng.random(len(who)) < 0.9, ix("BW03ZZZ"), -1))

    idx = np.flatnonzero(t["gib"] <= p.t1)
    admit = rng.random(len(idx)) < 0.7
    v.add(idx, t["gib"][idx], GIB, ix("K92.2"), kind=np.where(admit, IP, ER),
          los=np.where(admit, _los(rng, p, idx, 1, 4), 0),
          proc=np.where(rng.random(len(idx)) < 0.8, ix("0DJ08ZZ"), -1), first=True)

    # NSAID courses: one dispensing visit per 30-day supply; a course running at the first
    # bleed stops there (a course starting after it is kept, or users would lose bleeds).
    supplies = p.a["nsaid_supplies"]
    who = np.repeat(everyone, supplies)
    k = _ranks(supplies)
    when = t["ns_start"][who] + 30 * k
    keep = (when < t["gib"][who]) | (t["ns_start"][who] > t["gib"][who])
    v.add(who[keep], when[keep], NSAID, p.a["nsaid_dx"][who[keep]], first=k[keep] == 0)


def build_visits(rng: np.random.Generator, p: People) -> Visits:
    """All visits of a chunk within each person's observation window, with their site."""
    v = _VisitList()
    everyone = np.arange(p.n)
    # Registration visit at entry, at the primary site: observation starts with a visit.
    v.add(everyone, p.t0, GENERAL, _pick(rng, _MINOR, p.n), site=p.primary)
    who, when = _follow(rng, p, everyone, p.t0.astype(float), 0.6)
    v.add(who, when, GENERAL, _pick(rng, _MINOR, len(who)))
    shared = np.flatnonzero(p.secondary >= 0)
    when = p.t0[shared] + rng.random(len(shared)) * (p.t1[shared] - p.t0[shared])
    v.add(shared, when, GENERAL, _pick(rng, _MINOR, len(shared)), site=p.secondary[shared])
    _chronic_visits(rng, p, v)
    _cardio_cancer_visits(rng, p, v)
    _acute_visits(rng, p, v)

    c = v.concat()
    person, start = c["person"], c["start"]
    keep = (start >= p.t0[person]) & (start <= p.t1[person])
    c = {k: x[keep] for k, x in c.items()}
    person, start, kind = c["person"], c["start"], c["kind"]
    # Shared persons split their visits; admissions lean towards the tertiary centre.
    sec, pri = p.secondary[person], p.primary[person]
    p_sec = np.where(kind == IP, np.where(sec == 0, 0.65, np.where(pri == 0, 0.15, 0.35)), 0.35)
    go = (sec >= 0) & (c["site"] < 0) & (rng.random(len(person)) < p_sec)
    site = np.where(c["site"] >= 0, c["site"], np.where(go, sec, pri))
    # A stay that would run past death or the extract starts early enough to last a day.
    t0, t1 = p.t0[person], p.t1[person]
    late = (kind == IP) & (start + c["los"] > t1)
    start = np.where(late, np.maximum(t0, np.minimum(start, t1 - 1)), start)
    end = np.minimum(start + c["los"], t1)
    order = np.lexsort((c["dx"], c["purpose"], start, person))
    return Visits(
        person=person[order], start=start[order], end=end[order],
        kind=c["kind"][order].astype(np.int8), purpose=c["purpose"][order].astype(np.int8),
        dx=c["dx"][order].astype(np.int64), proc=c["proc"][order].astype(np.int64),
        first=c["first"][order].astype(bool), site=site[order].astype(np.int64),
    )
