"""Scoring the payer's findings against the fraud injected into a synthetic network.

``healthspace synth --fraud-rate`` writes what it tampered with to ``OUT/_truth/fraud.csv``
(one row per labelled claim) and ``fraud.json`` (settings, the upcoding hospitals) — never
into a node store. Given the findings a payer node kept (``fraud_screen`` flags and
``evidence_check`` answers) and the upcoding ranking, :func:`score` reports precision and
recall per pattern: split admissions and duplicate bills by claim, unsupported severity codes
by (claim, code), and whether the injected upcoding hospitals are the top-ranked ones.

A split admission counts as detected when the screen flags it and the treating hospital did
not confirm the stay in its record (the evidence check's ``stay`` answer); the screen's flags
alone are scored too (``split_admission_screen_only``), since a documented early readmission
is flagged by the rule but cleared by the hospital's record.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def _rate(hit: int, of: int) -> float | None:
    return hit / of if of else None


def _pr(predicted: set[Any], truth: set[Any]) -> dict[str, Any]:
    hit = len(predicted & truth)
    return {"precision": _rate(hit, len(predicted)), "recall": _rate(hit, len(truth)),
            "true_positives": hit, "false_positives": len(predicted - truth),
            "false_negatives": len(truth - predicted)}


def load_truth(truth_dir: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The labelled claims and the settings of an injected network's ``_truth`` folder."""
    truth_dir = Path(truth_dir)
    with open(truth_dir / "fraud.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    meta = json.loads((truth_dir / "fraud.json").read_text(encoding="utf-8"))
    return rows, meta


def score(truth_dir: Path, screen: Iterable[dict[str, Any]],
          evidence: Iterable[dict[str, Any]], ranking: Sequence[str]) -> dict[str, Any]:
    """Precision and recall of each pattern; ``ranking`` lists hospitals, most suspect first."""
    rows, meta = load_truth(truth_dir)
    screen, evidence = list(screen), list(evidence)

    def labelled(pattern: str) -> set[int]:
        return {int(r["payer_visit_occurrence_id"]) for r in rows if r["pattern"] == pattern}

    def flagged(flag: str) -> set[int]:
        return {int(f["visit_id"]) for f in screen if f.get("finding") == flag}

    upcoded = {(int(r["payer_visit_occurrence_id"]), r["code"]) for r in rows
               if r["pattern"] == "upcoded"}
    unsupported = {(int(f["visit_id"]), str(f["code"])) for f in evidence
                   if f.get("finding") == "unsupported"}
    confirmed = {int(f["visit_id"]) for f in evidence
                 if f.get("code") == "stay" and f.get("finding") == "supported"}
    injected = list(meta.get("upcoding_hospitals") or [])
    top = list(ranking[:len(injected)])
    return {
        "split_admission": _pr(flagged("split_admission") - confirmed,
                               labelled("split_admission")),
        "split_admission_screen_only": _pr(flagged("split_admission"),
                                           labelled("split_admission")),
        "duplicate_billing": _pr(flagged("duplicate_billing"), labelled("duplicate_billing")),
        "unsupported_severity": _pr(unsupported, upcoded),
        "upcoding": {"top_ranked_are_injected": bool(injected) and set(top) == set(injected),
                     "injected": injected, "ranking": list(ranking)},
    }
