"""Pooled ground-truth facts and the static tables (concept, care_site) of the synthetic network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from healthspace.cdm.synth_tables import Chunk, CsvSink
from healthspace.cdm.synth_vocab import CODES, concept_rows

# Condition groups whose person counts are reported: name -> code prefixes.
GROUPS: dict[str, tuple[str, ...]] = {
    "type2_diabetes_E11": ("E11",),
    "diabetes_complication_E11.2": ("E11.2",),
    "hypertension_I10": ("I10",),
    "ckd_N18": ("N18",),
    "heart_failure_I50": ("I50",),
    "ami_I21": ("I21",),
    "lung_cancer_C34": ("C34",),
    "gi_bleed_K92.2": ("K92.2",),
    "pneumonia_J18": ("J18",),
}
_MEMBER = np.array(
    [[code.startswith(prefixes) for prefixes in GROUPS.values()] for _, code, _ in CODES]
)


class Tally:
    """Counts over the whole network, where a person is counted once however many sites hold them.

    ``unique`` is what a perfectly de-duplicated (PSI-linked) federated count should return;
    ``sum_over_sites`` is the naive sum of per-site counts.
    """

    def __init__(self, sites: int) -> None:
        self.sites = sites
        self.unique = np.zeros(len(GROUPS), dtype=np.int64)
        self.over_sites = np.zeros(len(GROUPS), dtype=np.int64)
        self.deaths = 0
        self.deaths_over_sites = 0
        self.insured = 0

    def add(self, c: Chunk) -> None:
        person = c.visits.person[c.cond.visit]
        pair = person * self.sites + c.visits.site[c.cond.visit]
        for j in range(len(GROUPS)):
            hit = _MEMBER[c.cond.code, j]
            self.unique[j] += np.unique(person[hit]).size
            self.over_sites[j] += np.unique(pair[hit]).size
        p = c.people
        self.deaths += int(p.dead.sum())
        self.deaths_over_sites += int((p.dead * (1 + (p.secondary >= 0))).sum())
        self.insured += int(p.insured.sum())

    def facts(self) -> dict[str, object]:
        return {
            "persons_with_condition": {
                name: {"unique": int(u), "sum_over_sites": int(s)}
                for name, u, s in zip(GROUPS, self.unique, self.over_sites, strict=True)
            },
            "deaths": {"unique": self.deaths, "sum_over_sites": self.deaths_over_sites},
            "insured_persons": self.insured,
        }


def _concepts(folder: Path, exclude: frozenset[str] = frozenset()) -> int:
    cols = concept_rows(exclude)
    n = len(cols["concept_id"])
    sink = CsvSink.cdm(folder, "concept")
    sink.write(n, {
        **{k: pa.array(v) for k, v in cols.items()},
        "valid_start_date": pa.array(np.zeros(n, np.int32), pa.date32()),
        "valid_end_date": pa.array(np.full(n, 47481, np.int32), pa.date32()),  # 2099-12-31
    })
    sink.close()
    return n


def _care_sites(folder: Path, names: list[str], which: list[int]) -> int:
    """One row per listed hospital; hospital k has care_site_id k + 1 in every folder."""
    sink = CsvSink.cdm(folder, "care_site")
    level = ["tertiary" if k == 0 else "community" for k in which]
    sink.write(len(which), {
        "care_site_id": np.array(which, dtype=np.int64) + 1,
        "care_site_name": pa.array(
            [f"{names[k]} ({lv} hospital)" for k, lv in zip(which, level, strict=True)]
        ),
        "care_site_source_value": pa.array([names[k] for k in which]),
        "place_of_service_source_value": pa.array(level),
    })
    sink.close()
    return len(which)


def static_tables(out: Path, names: list[str], payer: bool) -> dict[str, dict[str, int]]:
    """Write concept.csv and care_site.csv for every holder; return their row counts."""
    counts: dict[str, dict[str, int]] = {}
    for k, name in enumerate(names):
        folder = out / name
        counts[name] = {"concept": _concepts(folder), "care_site": _care_sites(folder, names, [k])}
    if payer:
        folder = out / "payer"
        # The bureau holds no lab results, so it carries no LOINC concepts either.
        counts["payer"] = {
            "concept": _concepts(folder, frozenset({"LOINC"})),
            "care_site": _care_sites(folder, names, list(range(len(names)))),
        }
    return counts
