"""Benchmark: fund-fraud detection against injected ground truth.

Generates a synthetic network (hospitals + the payer bureau) with fraud injected into the
payer's claims at ``--hospitals`` (split admissions and duplicate bills at ``--rate``, severity
codes without clinical evidence on ``--upcode-share`` of the claims without CC/MCC), then runs,
in process, the payer node's ``fraud_screen`` and the ``evidence_check`` between the payer and
every hospital (sealed messages, each hospital answering from its own record: evidence for
severity codes, and whether it recorded each stay the screen flags as a split admission).
The findings the payer node keeps are scored against ``_truth/fraud.csv``: precision and
recall per pattern, and whether the injected upcoding hospitals rank top. A split admission
counts as detected when the screen flags it and the hospital's record does not hold the
stay; the screen's flags alone are shown too (``split_admission_screen_only``). Targets:
recall ≥ 0.9 at precision ≥ 0.8 for split admissions, duplicate billing and unsupported
severity codes.

With ``--json`` the last line is
``{"split_admission": {"precision": ..., "recall": ...}, "duplicate_billing": {...},
"unsupported_severity": {...}, "upcoding": {"top_ranked_are_injected": true|false}}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from healthspace.cdm.synth import generate
from healthspace.cdm.synth_fraud import FraudSpec
from healthspace.payer.fraud_truth import score
from healthspace.sim import load_site, simulate

console = Console(stderr=True)
TARGET_RECALL, TARGET_PRECISION = 0.9, 0.8


def run(out: Path, persons: int, sites: int, seed: int, rate: float, hospitals: list[str],
        upcode_share: float) -> tuple[dict, dict[str, float], dict]:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    generate(out, sites=sites, persons=persons, seed=seed, payer=True,
             fraud=FraudSpec(rate=rate, hospitals=tuple(hospitals), upcode_share=upcode_share))
    timings["generate"] = time.perf_counter() - t
    names = ["payer", *(f"hospital_{k + 1}" for k in range(sites))]
    t = time.perf_counter()
    loaded = {name: load_site(out / name) for name in names}
    timings["load"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        screened = simulate("fraud_screen", {"payer": loaded["payer"]})
        timings["fraud_screen"] = time.perf_counter() - t
        t = time.perf_counter()
        checked = simulate("evidence_check", loaded, params={"payer": "payer"})
        timings["evidence_check"] = time.perf_counter() - t
        kept = loaded["payer"].findings
        ranking = [row["hospital"] for row in screened["upcoding"]]
        scores = score(out / "_truth", kept.get("fraud_screen", []),
                       kept.get("evidence_check", []), ranking)
    finally:
        for site in loaded.values():
            site.con.close()
    return scores, timings, {"claims_screened": screened["claims"],
                             "claims_evidence_checked": checked["claims_checked"],
                             "upcoding": screened["upcoding"]}


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=10_000, help="persons per hospital")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rate", type=float, default=0.03)
    parser.add_argument("--upcode-share", type=float, default=0.25)
    parser.add_argument("--hospitals", default="hospital_3",
                        help="comma-separated hospitals whose claims are tampered with")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the JSON summary last")
    args = parser.parse_args()
    hospitals = [h.strip() for h in args.hospitals.split(",") if h.strip()]
    with tempfile.TemporaryDirectory(prefix="hs-fraud-") as tmp:
        out = args.workdir or Path(tmp)
        scores, timings, info = run(out, args.persons, args.sites, args.seed, args.rate,
                                    hospitals, args.upcode_share)
    table = Table("pattern", "precision", "recall", "TP", "FP", "FN", "target met",
                  title=f"fraud detection vs injected truth: {args.sites} hospitals × "
                        f"{args.persons:,} persons, rate {args.rate}, at {', '.join(hospitals)}")
    for pattern in ("split_admission_screen_only", "split_admission", "duplicate_billing",
                    "unsupported_severity"):
        s = scores[pattern]
        met = (s["precision"] or 0) >= TARGET_PRECISION and (s["recall"] or 0) >= TARGET_RECALL
        table.add_row(pattern, _fmt(s["precision"]), _fmt(s["recall"]),
                      str(s["true_positives"]), str(s["false_positives"]),
                      str(s["false_negatives"]), "yes" if met else "NO")
    console.print(table)
    ranked = Table("rank", "hospital", "ratio", "95% CI", title="upcoding signal "
                   f"(injected: {', '.join(scores['upcoding']['injected'])}; top ranked are "
                   f"injected: {scores['upcoding']['top_ranked_are_injected']})")
    for row in info["upcoding"]:
        ci = row["ci"] or [None, None]
        ranked.add_row(str(row["rank"]), row["hospital"], _fmt(row["ratio"]),
                       f"{_fmt(ci[0])}–{_fmt(ci[1])}")
    console.print(ranked)
    console.print(f"{info['claims_screened']:,} claims screened, "
                  f"{info['claims_evidence_checked']:,} checked for evidence; seconds: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if args.json:
        print(json.dumps({
            **{p: {k: scores[p][k] for k in ("precision", "recall")}
               for p in ("split_admission", "duplicate_billing", "unsupported_severity")},
            "upcoding": {"top_ranked_are_injected": scores["upcoding"]["top_ranked_are_injected"]},
        }))


if __name__ == "__main__":
    main()
