"""Benchmark: exact federated GLM (logistic) and Cox PH through the real hub and node processes
vs statsmodels / lifelines on the pooled data.

3 sites × 300,000 rows each (``--rows``), loaded into each node's store as its
``analysis_data`` table. The federated time is submit → result at the client (HTTP, long-polling
nodes, every Newton round, signed envelopes, both ledgers); the pooled time is the reference
library's fit on one in-memory pandas frame of all rows (formula parsing included for the GLM).
Durations are whole days, as in EHR data, with follow-up ending on day 3650, so every node's
last time holds many persons and no time is coarsened (the fits must then equal the pooled ones).
Target: federated ≤ 3 × pooled.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from healthspace.cdm.ingest import ingest_table
from healthspace.client.sdk import HubClient
from healthspace.launch import LocalFederation

console = Console()
SITES = ("site_a", "site_b", "site_c")
GLM_FORMULA = "y ~ age + bmi + smoker + C(region)"
COX_COVARIATES = ["age", "bmi", "smoker"]


def make_site(rows: int, seed: int, shift: float) -> pd.DataFrame:
    """One site's rows: a logistic outcome and an exponential time-to-event with censoring."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60 + shift, 10, rows).round(1)
    bmi = rng.normal(27, 4, rows).round(1)
    smoker = rng.binomial(1, 0.25 + 0.05 * shift, rows)
    region = rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.3, 0.2, 0.1])
    eta = -6 + 0.05 * age + 0.06 * bmi + 0.7 * smoker + 0.3 * (region == "south")
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    hazard = np.exp(-9 + 0.03 * age + 0.02 * bmi + 0.5 * smoker)
    event_day = np.ceil(rng.exponential(1 / hazard))
    # Loss to follow-up, or the end of the study on day 3650 (about a fifth of the rows).
    censor_day = np.minimum(rng.integers(30, 4500, rows), 3650)
    time_days = np.minimum(event_day, censor_day).astype(np.int64)
    event = (event_day <= censor_day).astype(np.int64)
    return pd.DataFrame({"y": y, "age": age, "bmi": bmi, "smoker": smoker, "region": region,
                         "time": time_days, "event": event})


def run_federated(client: HubClient, spec: dict, repeats: int) -> tuple[list[float], dict, int]:
    times: list[float] = []
    result: dict = {}
    rounds = 0
    for i in range(repeats + 1):
        started = time.perf_counter()
        view = client.wait(client.submit(spec).id, timeout=1800)
        elapsed = time.perf_counter() - started
        if view.status.value != "completed":
            raise SystemExit(f"{spec['analysis']} study ended {view.status.value}: {view.error}")
        result, rounds = view.result or {}, view.round
        if i:  # the first run warms the OS cache of every store
            times.append(elapsed)
    return times, result, rounds


def pooled_glm(data: pd.DataFrame, repeats: int) -> tuple[list[float], pd.Series, pd.Series]:
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    times: list[float] = []
    fit = None
    for _ in range(repeats):
        started = time.perf_counter()
        fit = smf.glm(GLM_FORMULA, data, family=sm.families.Binomial()).fit(tol=1e-12)
        times.append(time.perf_counter() - started)
    assert fit is not None
    return times, fit.params, fit.bse


def pooled_cox(data: pd.DataFrame, repeats: int) -> tuple[list[float], pd.Series, pd.Series]:
    from lifelines import CoxPHFitter

    times: list[float] = []
    cph = None
    for _ in range(repeats):
        started = time.perf_counter()
        cph = CoxPHFitter().fit(data[["time", "event", *COX_COVARIATES]], "time", "event",
                                fit_options={"precision": 1e-12})
        times.append(time.perf_counter() - started)
    assert cph is not None
    return times, cph.params_, cph.standard_errors_


def max_diff(ours: dict, ref: pd.Series) -> float:
    return max(abs(float(ours[str(k)]) - float(v)) for k, v in ref.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=300_000, help="rows per site")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-models-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frames = {name: make_site(args.rows, seed=i + 1, shift=2.0 * i)
              for i, name in enumerate(SITES)}
    for name, frame in frames.items():
        frame.to_csv(root / f"{name}.csv", index=False)
    console.print(f"data: 3 × {args.rows:,} rows in {time.perf_counter() - started:.1f}s")
    pooled = pd.concat(frames.values(), ignore_index=True)
    rows: list[tuple[str, str, str, str, str, str]] = []
    with LocalFederation(root / "fed") as fed:
        fed.init_hub()
        fed.start_hub()
        for name in SITES:
            store = fed.workdir / "nodes" / f"{name}.duckdb"
            ingest_table(store, root / f"{name}.csv")
            fed.ensure_org(name, "hospital")
            fed.add_node(name, name, store, policy={"level": "L1"})  # auto-approved
        fed.wait_nodes_ready()
        fed.ensure_org("bench", "consumer")
        with fed.operator() as op:
            op.add_user("bench", "bench", "consumer")
            token = op.issue_token("bench").token
        with HubClient(fed.url, token) as client:
            glm_spec = {"analysis": "glm", "nodes": list(SITES),
                        "params": {"formula": GLM_FORMULA, "family": "binomial"}}
            glm_t, glm_res, glm_rounds = run_federated(client, glm_spec, args.repeats)
            cox_spec = {"analysis": "cox", "nodes": list(SITES),
                        "params": {"duration": "time", "event": "event",
                                   "covariates": COX_COVARIATES}}
            cox_t, cox_res, cox_rounds = run_federated(client, cox_spec, args.repeats)
    ref_glm_t, glm_params, glm_bse = pooled_glm(pooled, args.repeats)
    ref_cox_t, cox_params, cox_bse = pooled_cox(pooled, args.repeats)
    for label, fed_t, ref_t, res, params, bse, rounds, ref_name in (
        ("GLM logistic", glm_t, ref_glm_t, glm_res, glm_params, glm_bse, glm_rounds,
         "statsmodels GLM"),
        ("Cox PH (Efron)", cox_t, ref_cox_t, cox_res, cox_params, cox_bse, cox_rounds,
         "lifelines CoxPHFitter"),
    ):
        fed_s, ref_s = statistics.median(fed_t), statistics.median(ref_t)
        diff = max(max_diff(res["params"], params), max_diff(res["bse"], bse))
        rows.append((label, f"{fed_s:.2f}", f"{ref_s:.2f} ({ref_name})", f"{fed_s / ref_s:.2f}",
                     str(rounds), f"{diff:.1e}"))
    table = Table(title=f"federated models, 3 sites × {args.rows:,} rows "
                        f"(median of {args.repeats}; target ratio ≤ 3)")
    for column in ("model", "federated s", "pooled s", "ratio", "rounds", "max |Δ| coef/SE"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
