"""Synthetic OMOP CDM hospitals (and optionally their insurance bureau) with known ground truth.

``generate(out)`` writes ``out/hospital_1 … hospital_N`` (EHR view; hospital_1 is a tertiary
centre), optionally ``out/payer`` (the medical-insurance bureau's settlement view) and
``out/_truth/truth.json`` (settings, the causal effects built in, pooled facts). With a payer,
``fraud`` injects fraud into the payer's claims (:mod:`healthspace.cdm.synth_fraud`) and
``insurer_claims`` writes ``out/insurer/claims.csv`` (:mod:`healthspace.cdm.synth_insurer`),
their truth beside ``truth.json``. About 10% of
each hospital's persons also attend a neighbouring hospital: same national id and network
pseudonym, different local ``person_id``. Output is byte-identical for the same arguments.

Persons are simulated in fixed blocks of :data:`CHUNK` network persons, each with its own
seeded stream, so memory stays flat and a block's output never depends on the others.
"""

from __future__ import annotations

import hmac
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from healthspace.cdm.synth_events import build_visits
from healthspace.cdm.synth_fraud import FraudLog, FraudSpec, tamper, write_fraud_json
from healthspace.cdm.synth_insurer import InsurerSample
from healthspace.cdm.synth_people import (
    EFFECTS,
    END_FROM,
    EXTRACT,
    LAST_ENTRY,
    TERTIARY_RISK,
    WINDOW_START,
    day,
    simulate,
)
from healthspace.cdm.synth_records import charges, conditions, drg_groups, drugs, labs, procedures
from healthspace.cdm.synth_tables import (
    IDENTITY_COLUMNS,
    PAYER_TABLES,
    SITE_TABLES,
    Chunk,
    CsvSink,
    Holder,
    Ids,
    write_payer,
    write_site,
)
from healthspace.cdm.synth_truth import Tally, static_tables
from healthspace.cdm.synth_vocab import TYPE_CLAIM, TYPE_EHR

# Documented demo key: real networks generate their own and keep it on data-holder nodes only.
DEMO_NETWORK_KEY: bytes = b"healthspace-demo-network-key-v1"
SHARED_FRACTION = 0.10
CHUNK = 100_000
SITE_ID_SPACE = 1_000_000_000  # hospital k's ids are k * 10^9 + running number
PAYER_ID_OFFSET = 1_000_000_000_000
GENERATOR_VERSION = "1"
_DISTINCT_IDS = 30_000_000  # national_ids() is unique for the first 30 million indices

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote: folder names and row counts per folder and table."""

    out: Path
    sites: list[str]
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    payer: bool = False
    fraud: dict[str, int] | None = None  # injected claims per pattern
    insurer: dict[str, int] | None = None  # insurer claims per expected verdict


def pseudonym(national_ids: Iterable[str], key: bytes = DEMO_NETWORK_KEY) -> list[str]:
    """Network pseudonym: hex HMAC-SHA256(key, national id as UTF-8)."""
    return [hmac.digest(key, str(n).encode("utf-8"), "sha256").hex() for n in national_ids]


_PROVINCES = np.array([31, 32, 33, 11, 44, 51])  # Shanghai, Jiangsu, Zhejiang, Beijing, ...
_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)


def national_ids(g: np.ndarray, birth: np.ndarray, male: np.ndarray) -> np.ndarray:
    """18-character resident ids (GB 11643 layout and check digit) unique per network index.

    Region and sequence encode ``g`` (unique for the first 30 million persons whatever the
    birth dates); the sequence is odd for men, even for women, as on real ids.
    """
    g = np.asarray(g, dtype=np.int64)
    region = _PROVINCES[(g // 5_000_000) % len(_PROVINCES)] * 10_000 + (g // 500) % 10_000
    born = np.asarray(birth).astype("datetime64[D]")
    months = born.astype("datetime64[M]")
    ymd = (
        (born.astype("datetime64[Y]").astype(np.int64) + 1970) * 10_000
        + (months.astype(np.int64) % 12 + 1) * 100
        + (born - months).astype(np.int64) + 1
    )
    seq = (g % 500) * 2 + np.asarray(male, dtype=np.int64)
    digits = np.column_stack(
        [region // 10**k % 10 for k in range(5, -1, -1)]
        + [ymd // 10**k % 10 for k in range(7, -1, -1)]
        + [seq // 10**k % 10 for k in range(2, -1, -1)]
    ).astype(np.uint8)
    check = _CHECK[(digits.astype(np.int64) @ _WEIGHTS) % 11]
    chars = np.column_stack([digits + ord("0"), check]).astype(np.uint8)
    return chars.view("S18")[:, 0].astype(str)


def _layout(seed: int, sites: int, persons: int) -> tuple[int, np.ndarray]:
    """Network size and each person's second hospital (-1 for one-hospital persons).

    Person ``g`` belongs to hospital ``g % sites``; each hospital sends ``h`` of its own to the
    next one (cyclically) and receives ``h`` from the previous one, so every hospital holds
    exactly ``persons`` persons of whom ``2h`` (~10%) also attend another hospital.
    """
    shared_out = round(SHARED_FRACTION / 2 * persons) if sites > 1 else 0
    own = persons - shared_out
    secondary = np.full(sites * own, -1, dtype=np.int64)
    rng = _rng(seed, 1)
    for s in range(sites):  # one draw per hospital, not per person
        ranks = rng.permutation(own)[:shared_out]
        secondary[ranks * sites + s] = (s + 1) % sites
    return sites * own, secondary


def _simulate_chunk(seed: int, index: int, g: np.ndarray, sites: int,
                    secondary: np.ndarray, key: bytes) -> Chunk:
    rng = _rng(seed, 2, index)
    people = simulate(rng, g, g % sites, secondary[g])
    visits = build_visits(rng, people)
    cond = conditions(people, visits)
    drug, lab, proc = drugs(rng, people, visits), labs(rng, people, visits), procedures(visits)
    total, fund = charges(rng, people, visits, drug, lab, proc)
    ids = national_ids(g, people.birth, people.male)
    return Chunk(
        people=people, visits=visits, cond=cond, drug=drug, lab=lab, proc=proc, total=total,
        fund=fund, drg=drg_groups(visits, cond), national_id=pa.array(ids),
        pseudonym=pa.array(pseudonym(ids, key)),
    )


def _open(folder: Path, tables: tuple[str, ...]) -> dict[str, CsvSink]:
    folder.mkdir(parents=True, exist_ok=True)
    sinks = {t: CsvSink.cdm(folder, t) for t in tables}
    sinks["identity"] = CsvSink(folder / "identity.csv", IDENTITY_COLUMNS)
    return sinks


def _clear(out: Path, names: list[str]) -> None:
    """Remove earlier generator output so no stale hospital, payer or insurer folder survives."""
    out.mkdir(parents=True, exist_ok=True)
    stale = [d for d in out.iterdir() if d.is_dir() and d.name.startswith("hospital_")]
    for d in stale + [out / n for n in names]:
        if d.is_dir():
            shutil.rmtree(d)


def generate(
    out: Path,
    *,
    sites: int = 3,
    persons: int = 10_000,
    seed: int = 0,
    payer: bool = False,
    fraud: FraudSpec | None = None,
    insurer_claims: int = 0,
    progress: Progress | None = None,
) -> SynthSummary:
    """Write a synthetic network of ``sites`` hospitals with ``persons`` persons each.

    Existing ``hospital_*``, ``payer``, ``insurer`` and ``_truth`` folders under ``out`` are
    replaced. ``fraud`` (needs ``payer``) tampers with the payer's copy of the listed
    hospitals' claims and writes ``_truth/fraud.csv`` and ``fraud.json``; ``insurer_claims``
    (needs ``payer``) writes that many commercial-insurer claims to ``insurer/claims.csv``.
    ``progress(stage, done, total)`` is called after each block of persons.
    """
    _check(sites, persons, seed, payer, fraud, insurer_claims)
    out = Path(out)
    names = [f"hospital_{k + 1}" for k in range(sites)]
    fraud = fraud.for_network(names) if fraud is not None else None
    _clear(out, ["payer", "_truth", "insurer"])
    (out / "_truth").mkdir()
    total, secondary = _layout(seed, sites, persons)
    holders = [
        Holder(_open(out / name, SITE_TABLES), Ids((k + 1) * SITE_ID_SPACE), TYPE_EHR)
        for k, name in enumerate(names)
    ]
    bureau = Holder(_open(out / "payer", PAYER_TABLES), Ids(PAYER_ID_OFFSET), TYPE_CLAIM) \
        if payer else None
    log = FraudLog(out / "_truth" / "fraud.csv", names, fraud) if fraud is not None else None
    sample = InsurerSample(insurer_claims) if insurer_claims else None
    tally = Tally(sites)
    report = progress or (lambda stage, done, of: None)
    report("persons", 0, total)
    try:
        for index, first in enumerate(range(0, total, CHUNK)):
            g = np.arange(first, min(first + CHUNK, total), dtype=np.int64)
            chunk = _simulate_chunk(seed, index, g, sites, secondary, DEMO_NETWORK_KEY)
            for k, holder in enumerate(holders):
                write_site(holder, chunk, k)
            if bureau is not None:
                vid, claims = _write_claims(bureau, chunk, names, fraud, log,
                                            _rng(seed, 3, index))
                if sample is not None:
                    sample.add(_rng(seed, 4, index), claims, vid)
            tally.add(chunk)
            report("persons", int(g[-1]) + 1, total)
    finally:
        for h in holders if bureau is None else [*holders, bureau]:
            for sink in h.sinks.values():
                sink.close()
        if log is not None:
            log.close()
    rows = static_tables(out, names, payer)
    for name, h in zip(names, holders, strict=True):
        rows[name].update({t: s.rows for t, s in h.sinks.items()})
    if bureau is not None:
        rows["payer"].update({t: s.rows for t, s in bureau.sinks.items()})
    if fraud is not None and log is not None:
        write_fraud_json(out / "_truth", fraud, seed, log.counts)
    insurer = None
    if sample is not None:
        try:
            insurer = sample.write(out / "insurer", out / "_truth", _rng(seed, 4),
                                   _outsiders(_rng(seed, 5), total, insurer_claims))
        except ValueError:
            _clear(out, ["payer", "_truth", "insurer"])  # all or nothing
            raise
    settings = {"seed": seed, "sites": sites, "persons_per_site": persons, "payer": payer,
                "fraud": fraud.settings(seed) if fraud is not None else None,
                "insurer_claims": insurer_claims}
    _write_truth(out, settings, names, total, secondary, tally, rows)
    report("done", 1, 1)
    return SynthSummary(out=out, sites=names, rows=rows, payer=payer,
                        fraud=log.counts if log is not None else None, insurer=insurer)


def _check(sites: int, persons: int, seed: int, payer: bool, fraud: FraudSpec | None,
           insurer_claims: int) -> None:
    if sites < 1 or persons < 1:
        raise ValueError("sites and persons must be at least 1")
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if insurer_claims < 0:
        raise ValueError("insurer_claims must not be negative")
    if (fraud is not None or insurer_claims) and not payer:
        raise ValueError("fraud injection and insurer claims need the payer (payer=True)")
    if sites * persons + insurer_claims > _DISTINCT_IDS:
        raise ValueError(f"national ids are distinct for {_DISTINCT_IDS:,} persons only")


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _write_claims(bureau: Holder, chunk: Chunk, names: list[str], fraud: FraudSpec | None,
                  log: FraudLog | None, rng: np.random.Generator) -> tuple[np.ndarray, Chunk]:
    """The payer's claims of one chunk, tampered with at ``fraud.hospitals`` if asked;
    returns their visit ids and the (tampered) chunk they were written from."""
    if fraud is None or log is None:
        return write_payer(bureau, chunk), chunk
    sites = np.array([names.index(h) for h in fraud.hospitals], dtype=np.int64)
    claims, labels = tamper(rng, chunk, fraud, sites)
    vid = write_payer(bureau, claims)
    log.add(claims, labels, vid)
    return vid, claims


def _outsiders(rng: np.random.Generator, first: int, n: int) -> np.ndarray:
    """Valid national ids of ``n`` persons outside the network (indices ``first`` on)."""
    birth = rng.integers(day("1935-01-01"), day("2004-12-31"), n)
    return national_ids(np.arange(first, first + n), birth, rng.random(n) < 0.5)


def _write_truth(out: Path, settings: dict[str, Any], names: list[str], total: int,
                 secondary: np.ndarray, tally: Tally, rows: dict[str, dict[str, int]]) -> None:
    truth = {
        "generator": {"name": "healthspace.cdm.synth", "version": GENERATOR_VERSION},
        "settings": {
            **settings, "shared_fraction": SHARED_FRACTION, "chunk_size": CHUNK,
            "network_key": DEMO_NETWORK_KEY.decode(),
            "window": {"first_entry": _iso(WINDOW_START), "last_entry": _iso(LAST_ENTRY),
                       "most_end_from": _iso(END_FROM), "extract_date": _iso(EXTRACT)},
        },
        "sites": {
            name: {"persons": rows[name]["person"], "tertiary": k == 0, "care_site_id": k + 1,
                   "person_id_offset": (k + 1) * SITE_ID_SPACE,
                   "shared_persons": _shared_at(secondary, len(names), k),
                   "risk_multiplier": TERTIARY_RISK if k == 0 else 1.0}
            for k, name in enumerate(names)
        },
        "payer": {"persons": rows["payer"]["person"], "person_id_offset": PAYER_ID_OFFSET}
        if settings["payer"] else None,
        "effects": EFFECTS,
        "pooled": {"unique_persons": total, "shared_persons": int((secondary >= 0).sum()),
                   **tally.facts()},
        "rows": rows,
    }
    folder = out / "_truth"
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(truth, indent=2, sort_keys=True) + "\n"
    (folder / "truth.json").write_text(text, encoding="utf-8")


def _shared_at(secondary: np.ndarray, sites: int, site: int) -> int:
    """Persons of ``site`` who also attend another hospital (sent there or received)."""
    home = np.arange(len(secondary)) % sites == site
    return int((home & (secondary >= 0)).sum() + (secondary == site).sum())


def _iso(day: int) -> str:
    return str(np.datetime64(day, "D"))
