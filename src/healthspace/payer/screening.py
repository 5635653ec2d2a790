"""Fund-fraud screening on the payer's settlement data (pure functions over grouped cases).

The bureau's node already sees every hospital's claims, so these checks run there alone:

* **split admission**: a stay that starts within ``readmit_days`` (default 15) of the same
  person's previous discharge with the same diagnosis family (ADRG, or the principal
  diagnosis's ICD-10 category when ungrouped), at the same or another hospital;
* **duplicate billing**: a second claim of the same person, admission day, principal
  diagnosis and charge;
* **outlier length of stay**: a stay longer than Q3 + 3·IQR of its DRG (exact: the payer
  holds all its claims);
* **upcoding signal** per hospital: observed CC/MCC claims over those expected from the
  network's severity rate of each ADRG for that hospital's case mix (indirect
  standardisation), with an exact Poisson 95 % interval for the ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

FLAGS = ("split_admission", "duplicate_billing", "outlier_los")


def _family(frame: pd.DataFrame) -> pd.Series:
    category = frame["principal"].fillna("").str.split(".").str[0].str[:3]
    return frame["adrg"].where(frame["adrg"].notna(), "dx:" + category)


def flag_claims(cases: pd.DataFrame, readmit_days: int = 15) -> pd.DataFrame:
    """``cases`` (grouped, with a ``hospital`` column) with one boolean column per check."""
    frame = cases.sort_values(["person_id", "admitted", "visit_id"]).reset_index(drop=True)
    frame["family"] = _family(frame)
    admitted = pd.to_datetime(frame["admitted"])
    discharged = pd.to_datetime(frame["discharged"])
    previous = discharged.groupby([frame["person_id"], frame["family"]]).shift()
    gap = (admitted - previous).dt.days
    duplicate = frame.duplicated(["person_id", "admitted", "principal", "cost"], keep="first")
    frame["duplicate_billing"] = duplicate
    frame["split_admission"] = (gap >= 0) & (gap <= readmit_days) & ~duplicate
    q1 = frame.groupby("drg")["los"].transform(lambda s: s.quantile(0.25))
    q3 = frame.groupby("drg")["los"].transform(lambda s: s.quantile(0.75))
    frame["outlier_los"] = frame["los"] > q3 + 3 * (q3 - q1)
    return frame.drop(columns=["family"])


def _lower_bound(row: dict[str, Any]) -> float:
    return float(row["ci"][0]) if row["ci"] else -np.inf


def upcoding(cases: pd.DataFrame) -> list[dict[str, Any]]:
    """Per hospital: observed and expected CC/MCC claims, their ratio and 95 % interval,
    ranked by the ratio's lower bound (highest first). Split ADRGs only."""
    split = cases[cases["severity"].isin(["mcc", "cc", "none"])].copy()
    split["severe"] = split["severity"].isin(["mcc", "cc"])
    rate = split.groupby("adrg")["severe"].mean()
    split["expected"] = split["adrg"].map(rate)
    rows = []
    for hospital, group in split.groupby("hospital"):
        observed = int(group["severe"].sum())
        expected = float(group["expected"].sum())
        lo = stats.chi2.ppf(0.025, 2 * observed) / 2 if observed else 0.0
        hi = stats.chi2.ppf(0.975, 2 * observed + 2) / 2
        rows.append({"hospital": str(hospital), "cases": int(len(group)),
                     "observed": observed, "expected": expected,
                     "ratio": observed / expected if expected else None,
                     "ci": [float(lo) / expected, float(hi) / expected] if expected else None})
    rows.sort(key=_lower_bound, reverse=True)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows
