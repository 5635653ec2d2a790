"""Diagnoses, dispensed drugs, lab results, procedures and charges recorded at each visit."""

from __future__ import annotations

import numpy as np

from healthspace.cdm.synth_events import (
    AMI,
    CHEMO,
    CKD,
    DM,
    ER,
    GENERAL,
    GIB,
    HF,
    HTN,
    IP,
    LC,
    NSAID,
    OP,
    PNEU,
    Rows,
    Visits,
    dm_code,
)
from healthspace.cdm.synth_people import YEAR, People
from healthspace.cdm.synth_vocab import CODES, ix

UNITS = {"4548-4": "%", "33914-3": "mL/min/{1.73_m2}", "8480-6": "mm[Hg]", "718-7": "g/dL"}


def _prices(table: dict[str, float]) -> np.ndarray:
    out = np.zeros(len(CODES))
    for code, price in table.items():
        out[ix(code)] = price
    return out


# CNY per day of supply (drugs), per test (labs) or per procedure.
_DRUG_PER_DAY = _prices({
    "A10BA02": 1.5, "A10BB09": 2.0, "A10AB01": 6.0, "A10AB05": 9.0, "C10AA01": 1.5,
    "C10AA05": 3.0, "B01AC06": 0.5, "M01AE01": 1.0, "M01AB05": 1.2, "A02BC01": 1.5,
    "A02BC02": 40.0, "B01AA03": 0.5, "L01XE03": 180.0, "L01BA04": 4000.0, "C08CA01": 1.5,
    "C09CA01": 2.0, "C03CA01": 0.3, "J01DD04": 60.0,
})
_LAB = _prices({"4548-4": 60.0, "33914-3": 30.0, "8480-6": 0.0, "718-7": 20.0})
_PROC = _prices({
    "027034Z": 42000.0, "0BTC4ZZ": 58000.0, "3E03305": 1500.0, "5A1D70Z": 450.0,
    "0DJ08ZZ": 1200.0, "BW03ZZZ": 90.0,
})

# Fund-paid share by scheme (0 employees, 1 residents) and visit kind (IP, OP, ER).
_FUND_SHARE = np.array([[0.85, 0.70, 0.70], [0.65, 0.50, 0.50]])

# DRG-like groups (CHS-DRG style: ADRG + severity 1 major / 3 minor / 5 no comorbidity).
_ADRG = {GENERAL: "XJ1", HTN: "FT2", DM: "KS1", CKD: "LR1", HF: "FR3", AMI: "FR1", LC: "ER1",
         CHEMO: "RE1", PNEU: "ES3", GIB: "GS1", NSAID: "IU2"}
_PCI_ADRG = "FM1"
DRG_CODES: tuple[str, ...] = tuple(
    f"{a}{s}" for a in [*_ADRG.values(), _PCI_ADRG] for s in ("1", "3", "5")
)
_ADRG_POS = np.zeros(max(_ADRG) + 1, dtype=np.int64)
_ADRG_POS[list(_ADRG)] = np.arange(len(_ADRG))


def _rows(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> Rows:
    """Concatenate (visit, code, value, quantity) parts and order them by visit."""
    visit, code, value, qty = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.argsort(visit, kind="stable")
    return Rows(visit[order], code[order].astype(np.int64), value[order], qty[order])


def conditions(p: People, v: Visits) -> Rows:
    """Principal diagnosis of every visit plus active chronic diseases at admissions.

    ``value`` is 1 for a secondary (comorbidity) diagnosis, 0 for the principal one.
    """
    nv = len(v)
    parts = [(np.arange(nv), v.dx, np.zeros(nv), np.zeros(nv))]
    ip = v.kind == IP
    coders = {
        "htn": (HTN, lambda i, d: np.full(len(i), ix("I10"))),
        "dm": (DM, lambda i, d: dm_code(p, i, d)),
        "ckd": (CKD, lambda i, d: ix("N18.3") + p.a["ckd_stage"][i] - 3),
        "hf": (HF, lambda i, d: p.a["hf_code"][i]),
    }
    for key, (purpose, code_of) in coders.items():
        rows = np.flatnonzero(ip & (v.purpose != purpose) & p.on(key, v.person, v.start))
        code = code_of(v.person[rows], v.start[rows])
        parts.append((rows, code, np.ones(len(rows)), np.zeros(len(rows))))
    return _rows(parts)


def drugs(rng: np.random.Generator, p: People, v: Visits) -> Rows:
    """Drugs dispensed at each visit; ``value`` = days supply, ``quantity`` = units."""
    person, pur, nv = v.person, v.purpose, len(v)
    supply = rng.choice([30, 60, 90], nv, p=[0.3, 0.3, 0.4]).astype(float)
    stay = np.maximum(v.end - v.start, 1).astype(float)
    parts = []

    def give(mask: np.ndarray, code: int | np.ndarray, days: np.ndarray, per_day: float) -> None:
        rows = np.flatnonzero(mask)
        codes = np.broadcast_to(np.asarray(code), (nv,))[rows]
        parts.append((rows, codes, days[rows], np.round(days[rows] * per_day, 1)))

    def on(key: str) -> np.ndarray:
        return p.on(key, person, v.start)

    month, one = np.full(nv, 30.0), np.ones(nv)
    drug = p.a["dm_drug"][person]
    care = np.isin(pur, [DM, HTN, AMI, HF, CKD])
    give((pur == DM) & (drug == 1), ix("A10BA02"), supply, 2.0)
    give((pur == DM) & (drug == 2), ix("A10BB09"), supply, 1.0)
    give((pur == DM) & on("ins"), p.a["ins_code"][person], month, 0.1)
    give(care & on("statin"), p.a["statin_code"][person], supply, 1.0)
    give(care & on("aspirin"), ix("B01AC06"), supply, 1.0)
    give((pur == HTN) & p.a["amlodipine"][person], ix("C08CA01"), supply, 1.0)
    give((pur == HTN) & p.a["losartan"][person], ix("C09CA01"), supply, 1.0)
    give(pur == HF, ix("C03CA01"), supply, 1.0)
    give((pur == HF) & on("warf"), ix("B01AA03"), supply, 1.0)
    give((pur == LC) & (v.kind == OP) & p.a["erlotinib"][person], ix("L01XE03"), month, 1.0)
    give(pur == CHEMO, ix("L01BA04"), one, 1.0)
    give(pur == PNEU, ix("J01DD04"), np.where(v.kind == IP, stay, 7.0), 1.0)
    give(pur == GIB, ix("A02BC02"), stay, 1.0)
    give(pur == NSAID, p.a["nsaid_code"][person], month, 2.0)
    give((pur == NSAID) & p.a["ppi_co"][person], ix("A02BC01"), month, 1.0)
    return _rows(parts)


def labs(rng: np.random.Generator, p: People, v: Visits) -> Rows:
    """HbA1c, eGFR, systolic BP and haemoglobin, with values from the person's state that day."""
    person, day, pur, nv = v.person, v.start, v.purpose, len(v)
    u = rng.random((4, nv))
    age = (day - p.birth[person]) / YEAR
    ip, general = v.kind == IP, pur == GENERAL
    parts = []

    def on(key: str) -> np.ndarray:
        return p.on(key, person, day)

    def measure(mask: np.ndarray, code: str, value: np.ndarray) -> None:
        rows = np.flatnonzero(mask)
        parts.append((rows, np.full(len(rows), ix(code)), value[rows], np.zeros(len(rows))))

    # HbA1c: diabetics sit around their own level, higher on the untreated start day.
    untreated = (day < np.floor(p.t["dm"][person]) + 1) | (p.a["dm_drug"][person] == 0)
    diabetic = p.a["hba1c"][person] + 0.8 * untreated + rng.normal(0, 0.4, nv)
    hba1c = np.where(on("dm"), diabetic, rng.normal(5.4, 0.35, nv))
    measure(((pur == DM) & (v.first | (u[0] < 0.6))) | (general & (u[0] < 0.1)), "4548-4",
            np.round(np.maximum(hba1c, 4.0), 1))

    stage = p.a["ckd_stage"][person]
    ckd = np.select([stage == 3, stage == 4], [45.0, 22.0], 10.0) + rng.normal(0, 4, nv)
    healthy = 110 - 0.8 * (age - 30) + p.a["egfr_noise"][person] + rng.normal(0, 4, nv)
    egfr = np.where(on("ckd"), np.clip(ckd, 4, 59), np.clip(healthy, 61, 140))
    measure((pur == CKD) | ((pur == DM) & (u[1] < 0.3)) | (general & (u[1] < 0.15)) | ip,
            "33914-3", np.round(egfr))

    hyper = np.where((pur == HTN) & v.first, rng.normal(155, 12, nv), rng.normal(140, 14, nv))
    sbp = np.where(on("htn"), hyper, rng.normal(118 + 0.25 * (age - 40), 11, nv))
    measure((pur == HTN) | (general & (u[2] < 0.5)) | ip, "8480-6", np.round(sbp))

    normal = np.where(p.male[person], rng.normal(14.5, 1.2, nv), rng.normal(12.8, 1.1, nv))
    hb = np.where(pur == GIB, rng.normal(8.5, 1.5, nv), normal - 1.5 * on("ckd"))
    measure((pur == GIB) | (ip & (u[3] < 0.8)) | (general & (u[3] < 0.1)), "718-7",
            np.round(np.clip(hb, 4.0, 19.0), 1))
    return _rows(parts)


def procedures(v: Visits) -> Rows:
    rows = np.flatnonzero(v.proc >= 0)
    zeros = np.zeros(len(rows))
    return Rows(rows, v.proc[rows], zeros, zeros)


def charges(rng: np.random.Generator, p: People, v: Visits, drug: Rows, lab: Rows,
            proc: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(total, fund-paid) per visit in integer fen, so fund-paid + self-paid = total exactly."""
    nv = len(v)
    tert = v.site == 0
    stay = np.maximum(v.end - v.start, 1)
    base = np.select(
        [v.kind == IP, v.kind == ER],
        [np.where(tert, 3200.0, 1600.0) * stay * rng.lognormal(0, 0.3, nv),
         np.where(tert, 1200.0, 700.0) * rng.lognormal(0, 0.4, nv)],
        np.where(tert, 350.0, 160.0) * rng.lognormal(0, 0.5, nv),
    )
    extra = (
        np.bincount(drug.visit, _DRUG_PER_DAY[drug.code] * drug.value, minlength=nv)
        + np.bincount(lab.visit, _LAB[lab.code], minlength=nv)
        + np.bincount(proc.visit, _PROC[proc.code], minlength=nv)
    )
    total = np.round((base + extra) * 100).astype(np.int64)
    share = _FUND_SHARE[p.plan[v.person], v.kind] - 0.05 * tert
    fund = np.round(total * np.where(p.insured[v.person], share, 0.0)).astype(np.int64)
    return total, fund


def drg_groups(v: Visits, cond: Rows) -> np.ndarray:
    """Index into :data:`DRG_CODES` for inpatient stays, -1 otherwise."""
    comorbid = np.bincount(cond.visit, cond.value, minlength=len(v))
    severity = np.select([comorbid >= 2, comorbid == 1], [0, 1], 2)
    adrg = _ADRG_POS[v.purpose]
    adrg = np.where((v.purpose == AMI) & (v.proc >= 0), len(_ADRG), adrg)
    return np.where(v.kind == IP, adrg * 3 + severity, -1)
