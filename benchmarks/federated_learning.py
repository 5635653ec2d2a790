"""Benchmark: federated training (``fl_train``) vs centralised fits, and time per round vs Flower.

(a) Accuracy. ``--sites`` synthetic hospitals of ``--persons`` persons (``healthspace synth``)
are turned, at each site, into one row per type 2 diabetes patient (cohort: first E11 code,
adult, inside an observation period) with age, sex, the last HbA1c of the year before,
comorbidities and diabetes drugs, and the binary outcome "first diabetic complication
(E11.2x) within ``--window`` days" (patients with one before are left out). ``fl_train``
trains logistic regression and an MLP over the OMOP folders with the cohort and dataset
(``simulate_dirs``, each site building its own table as a node does). The same per-site tables
are built once more through ``build_analysis_table`` and pooled, and on the pooled rows we fit
(i) statsmodels ``Logit`` (maximum likelihood) and (ii) the same model with the same SGD
schedule (``healthspace.learning.models.train``: one pass per round over all pooled rows,
batches from ``default_rng([seed, round])``). Each site holds out ``--holdout`` of its rows
(fl_train's validation split, seeded); the central fits see the pooled training rows only.
AUCs on the training and the held-out rows: fl_train's own (from the summed score histograms)
and the exact Mann–Whitney AUC of each final model on the pooled rows. Target: federated ≥
0.99 × centralised. (b) trains on all rows.

(b) Time per training round vs Flower running the same model (float64 torch, same initial
weights, same per-site rows and standardisation, same rounds, local epochs, batch size, learning
rate and batch order, FedAvg weighted by rows; each Flower client also evaluates every round,
as fl_train's nodes do). Flower 1.42 runs in its own virtualenv (``--flower-venv``; created
with ``python -m venv`` and ``pip install flwr[simulation]==1.42.0 torch==2.13.0`` when
missing, since flwr pins fastapi, starlette, uvicorn and typer versions that clash with ours)
in its simulation engine (``flwr.simulation.run_simulation``, Ray backend, 1 CPU per client,
one supernode per site). With ``--flower-deployment`` (slow: minutes) the same app also runs
in Flower's deployment engine: a ``flower-superlink`` and one ``flower-supernode`` per site on
loopback (insecure, default subprocess isolation: a new ClientApp process per message; an idle
supernode polls every 3 s), started with ``flwr run``. Ours runs ``simulate_tables`` over the
same CSV tables and, unless ``--skip-hub``, a real hub and one node process per site on
loopback (HTTP, long-polling nodes, signed envelopes). Hub, node and deployment processes get
``--node-threads`` OMP/MKL threads (1 by default, as Ray gives each 1-CPU Flower client). A
round is timed from its start to the start of the next (Flower: its ``evaluate_fn`` marks;
ours: round callbacks or task timestamps); the table shows the median (robust to the first,
warm-up round and to other load on the machine) and the mean. Process and Ray start-up are
excluded (the total wall time shows them). Target: ours / Flower ≤ 1. Telemetry of Flower
and Ray is switched off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from healthspace.analyses.base import LocalContext
from healthspace.cdm.synth import generate
from healthspace.cohort.dataset import build_analysis_table, load_dataset
from healthspace.cohort.models import load_cohort
from healthspace.core.encoding import decode_array
from healthspace.governance.consent_filter import ConsentFilter
from healthspace.learning.evaluation import exact_auc
from healthspace.learning.features import NUMERIC, Preparation, feature_kinds, usable_rows
from healthspace.learning.models import (
    Architecture,
    Schedule,
    initial_weights,
    predict,
    train,
)
from healthspace.sim import load_site, simulate_dirs, simulate_tables

# pandas 3 hands fl_train read-only arrays, which torch.from_numpy warns about (src issue).
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
console = Console()
if not console.is_terminal:
    console.width = 140
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
FLWR_VERSION = "1.42.0"
TORCH_VERSION = "2.13.0"
TARGET = "complication"
PURPOSE = "research"
COHORT: dict[str, Any] = {
    "name": "Type 2 diabetes",
    "description": "First type 2 diabetes code (ICD-10 E11) at the site, adults, with the index "
                   "date inside an observation period.",
    "entry": {"condition": {"codes": ["ICD10:E11%"]}},
    "inclusion": [{"age": {"min": 18}},
                  {"observation_period": {"min_prior_observation_days": 0}}],
}
_EVER = {"start": None, "end": 0}
_YEAR = {"start": -365, "end": 0}


def dataset_spec(window: int) -> dict[str, Any]:
    return {
        "name": "Diabetic complication",
        "covariates": [
            {"name": "age", "type": "age"},
            {"name": "male", "type": "sex"},
            {"name": "hba1c", "type": "measurement", "codes": ["LOINC:4548-4"],
             "window": _YEAR},
            {"name": "hypertension", "type": "condition", "codes": ["ICD10:I10"],
             "window": _EVER},
            {"name": "ckd", "type": "condition", "codes": ["ICD10:N18%"], "window": _EVER},
            {"name": "prior_mi", "type": "condition", "codes": ["ICD10:I21%", "ICD10:I25.2"],
             "window": _EVER},
            {"name": "heart_failure", "type": "condition", "codes": ["ICD10:I50%"],
             "window": _EVER},
            {"name": "metformin", "type": "drug", "codes": ["ATC:A10BA02"], "window": _YEAR},
            {"name": "gliclazide", "type": "drug", "codes": ["ATC:A10BB09"], "window": _YEAR},
            {"name": "insulin", "type": "drug", "codes": ["ATC:A10AB%"], "window": _YEAR},
            {"name": "statin", "type": "drug", "codes": ["ATC:C10AA%"], "window": _YEAR},
        ],
        "outcome": {"type": "binary", "condition": {"codes": ["ICD10:E11.2%"]},
                    "window": {"start": 1, "end": window}, "exclude_prior": True,
                    "event": TARGET},
    }


# -- (a) data and centralised references ----------------------------------------------------


def build_tables(sites: dict[str, Path], dataset: dict[str, Any], out: Path
                 ) -> dict[str, Path]:
    """Each site's ``analysis_data`` as a node builds it (consent applied), written as CSV."""
    spec, cohort = load_dataset(dataset), load_cohort(COHORT)
    tables: dict[str, Path] = {}
    for name, folder in sites.items():
        site = load_site(folder)
        try:
            consent = ConsentFilter.build(site.consent, site.policy.consent_default_tier,
                                          PURPOSE)
            ctx = LocalContext(con=site.con, site=name, cohort=cohort, purpose=PURPOSE,
                               consent=consent, dataset=spec)
            build_analysis_table(ctx, spec)
            frame = site.con.execute("SELECT * FROM analysis_data").df()
        finally:
            site.con.close()
        tables[name] = out / f"{name}.csv"
        frame.to_csv(tables[name], index=False)
    return tables


def read_rows(path: Path, features: list[str]) -> pd.DataFrame:
    """A site's rows as fl_train uses them: every feature and the outcome present."""
    return usable_rows(pd.read_csv(path), TARGET, features)


def held_out(n: int, holdout: float, seed: int) -> np.ndarray:
    """The rows a node holds out for validation: fl_train's own rule (``_split``)."""
    if holdout <= 0:
        return np.zeros(n, dtype=bool)
    return np.random.default_rng([seed, 0x7A11D]).random(n) < holdout


def pooled_rows(tables: dict[str, Path], features: list[str], holdout: float, seed: int
                ) -> pd.DataFrame:
    """Every site's rows in one frame, each marked held out (``_held``) as its node would."""
    frames = []
    for path in tables.values():
        rows = read_rows(path, features)
        frames.append(rows.assign(_held=held_out(len(rows), holdout, seed)))
    return pd.concat(frames, ignore_index=True)


def pooled_preparation(rows: pd.DataFrame, features: list[str]) -> Preparation:
    """fl_train's standardisation computed on the pooled rows: means and (n − 1) SDs."""
    kinds = feature_kinds(rows, features)
    numeric = [f for f in features if kinds[f] == NUMERIC]
    values = rows[numeric].astype(np.float64)
    stds = {f: float(v) if v > 1e-12 else 1.0 for f, v in values.std(ddof=1).items()}
    return Preparation(tuple(features), kinds, {f: float(v) for f, v in values.mean().items()},
                       stds, {})


def central_sgd(arch: Architecture, X: np.ndarray, y: np.ndarray, args: argparse.Namespace
                ) -> np.ndarray:
    """The model trained on the pooled rows with fl_train's schedule: round r = local_epochs
    passes over all rows, batch order from default_rng([seed, r])."""
    weights = initial_weights(arch, args.seed)
    schedule = Schedule(args.local_epochs, args.batch_size, args.lr)
    for round_no in range(1, args.rounds + 1):
        weights = train(arch, weights, X, y, schedule, args.seed, round_no)
    return weights


def central_logit(X: np.ndarray, y: np.ndarray) -> Any:
    """Maximum-likelihood logistic regression (statsmodels) on the pooled rows."""
    import statsmodels.api as sm

    fit = sm.Logit(y, sm.add_constant(X, has_constant="add")).fit(disp=0, method="newton",
                                                                   maxiter=100)
    return lambda Z: np.asarray(fit.predict(sm.add_constant(Z, has_constant="add")))


def fl_params(args: argparse.Namespace, model: str, features: list[str],
              holdout: float = 0.0) -> dict[str, Any]:
    return {"target": TARGET, "features": features, "model": model, "hidden": args.hidden,
            "rounds": args.rounds, "local_epochs": args.local_epochs,
            "batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
            "holdout": holdout}


def architecture(model: str, inputs: int, hidden: list[int]) -> Architecture:
    return Architecture(model, inputs, tuple(hidden) if model == "mlp" else ())  # type: ignore


def final_weights(result: dict[str, Any]) -> np.ndarray:
    return np.asarray(decode_array(result["model"]["weights"]), dtype=np.float64)


def accuracy(args: argparse.Namespace, sites: dict[str, Path], dataset: dict[str, Any],
             pooled: pd.DataFrame, features: list[str]) -> None:
    """fl_train over the OMOP folders vs statsmodels Logit and central SGD on pooled rows."""
    held = pooled["_held"].to_numpy()
    train_rows = pooled[~held]
    prep = pooled_preparation(train_rows, features)  # fl_train standardises on these too
    X, y = prep.encode(pooled), pooled[TARGET].to_numpy(dtype=np.float64)
    subsets = [("training", ~held)] + ([("held-out", held)] if held.any() else [])
    logit = central_logit(X[~held], y[~held])(X)
    table = Table(title=f"(a) federated vs centralised AUC: {len(sites)} sites, "
                        f"{len(pooled):,} patients ({int(held.sum())} held out), "
                        f"{int(y.sum())} complications; {args.rounds} rounds × "
                        f"{args.local_epochs} epoch(s), batch {args.batch_size}, lr {args.lr} "
                        f"(target fed/central ≥ 0.99)")
    for column in ("model", "rows", "fl_train AUC", "fed exact AUC", "central SGD AUC",
                   "Logit AUC", "fed/SGD", "fed/Logit", "fed s"):
        table.add_column(column, justify="left" if column in ("model", "rows") else "right")
    for model in ("logistic", "mlp"):
        started = time.perf_counter()
        result = simulate_dirs("fl_train", sites,
                               params=fl_params(args, model, features, args.holdout),
                               cohort=COHORT, dataset=dataset, purpose=PURPOSE)
        seconds = time.perf_counter() - started
        population = result["population"]
        if (population["n_train"], population["n_valid"]) != (len(train_rows), held.sum()):
            raise SystemExit(f"fl_train saw {population['n_train']} + {population['n_valid']} "
                             f"rows, the pooled tables hold {len(train_rows)} + {held.sum()}")
        arch = architecture(model, X.shape[1], args.hidden)
        fed = predict(arch, final_weights(result), X)
        sgd = predict(arch, central_sgd(arch, X[~held], y[~held], args), X)
        reported = {"training": result["metrics"], "held-out": result.get("validation")}
        for label, mask in subsets:
            fed_auc, sgd_auc = exact_auc(fed[mask], y[mask]), exact_auc(sgd[mask], y[mask])
            logit_auc = exact_auc(logit[mask], y[mask])
            table.add_row(model if model == "logistic" else f"mlp {args.hidden}", label,
                          f"{(reported[label] or {}).get('auc', float('nan')):.4f}",
                          f"{fed_auc:.4f}", f"{sgd_auc:.4f}", f"{logit_auc:.4f}",
                          f"{fed_auc / sgd_auc:.4f}", f"{fed_auc / logit_auc:.4f}",
                          f"{seconds:.1f}" if label == "training" else "")
    console.print(table)
    console.print("[dim]fl_train AUC: from the summed score histograms (what the network "
                  "sees); exact: Mann–Whitney on the pooled rows. Central fits use the pooled "
                  "training rows; fed s: simulate_dirs, each site rebuilding its table from "
                  "the cohort every round[/]")


# -- (b) time per round: ours --------------------------------------------------------------


def round_times(starts: list[float], end: float) -> list[float]:
    """Durations of consecutive rounds from their start times and the end of the last."""
    edges = [*starts, end]
    return [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]


def ours_sim(args: argparse.Namespace, tables: dict[str, Path], model: str,
             features: list[str]) -> dict[str, Any]:
    """simulate_tables with fl_train. After its statistics rounds, each protocol round trains
    round t and evaluates the model of round t − 1, and the last one evaluates the final
    model: training round t is timed from the start of its protocol round to the start of
    the next one (or the end)."""
    marks: dict[int, float] = {}
    started = time.perf_counter()
    result = simulate_tables("fl_train", tables, params=fl_params(args, model, features),
                             purpose=PURPOSE,
                             on_round=lambda r: marks.setdefault(r, time.perf_counter()))
    ended = time.perf_counter()
    last = max(marks)  # the final evaluation; the R rounds before it train
    starts = [marks[r] for r in range(last - args.rounds, last)]
    return {"result": result, "rounds": round_times(starts, ended), "total": ended - started,
            "weights": final_weights(result)}


def ours_hub(args: argparse.Namespace, tables: dict[str, Path], workdir: Path,
             features: list[str]) -> dict[str, dict[str, Any]]:
    """fl_train through a real hub and one node process per site; a round is timed from the
    hub queueing training round 1 to the last node finishing the final evaluation. With
    ``--node-threads`` N > 0 every process gets OMP/MKL_NUM_THREADS=N (Ray gives each Flower
    client as many threads as CPUs, here 1)."""
    out: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    if args.node_threads > 0:  # inherited by the hub and node processes
        os.environ.update(dict.fromkeys(THREAD_VARS, str(args.node_threads)))
    try:
        return _hub_runs(args, tables, workdir, features, out, started)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _hub_runs(args: argparse.Namespace, tables: dict[str, Path], workdir: Path,
              features: list[str], out: dict[str, dict[str, Any]], started: float
              ) -> dict[str, dict[str, Any]]:
    from healthspace.cdm.ingest import ingest_table
    from healthspace.client.sdk import HubClient
    from healthspace.launch import LocalFederation

    with LocalFederation(workdir) as fed:
        fed.init_hub()
        fed.start_hub()
        for name, path in tables.items():
            store = fed.workdir / "nodes" / f"{name}.duckdb"
            ingest_table(store, path)
            fed.ensure_org(name, "hospital")
            # L1: approved automatically; download: the consumer may fetch the weights.
            fed.add_node(name, name, store, policy={"level": "L1", "model_release": "download"})
        fed.wait_nodes_ready()
        fed.ensure_org("bench", "consumer")
        with fed.operator() as op:
            op.add_user("bench", "bench", "consumer")
            token = op.issue_token("bench").token
        setup = time.perf_counter() - started
        with HubClient(fed.url, token) as client:
            for model in ("logistic", "mlp"):
                spec = {"analysis": "fl_train", "nodes": sorted(tables), "purpose": PURPOSE,
                        "params": fl_params(args, model, features)}
                began = time.perf_counter()
                view = client.wait(client.submit(spec).id, timeout=1800)
                total = time.perf_counter() - began
                if view.status.value != "completed":
                    raise RuntimeError(f"fl_train ({model}) ended {view.status.value}: "
                                       f"{view.error}")
                last = max(t.round for t in view.tasks)  # as in ours_sim
                starts = [min(t.queued_at for t in view.tasks if t.round == r).timestamp()
                          for r in range(last - args.rounds, last)]
                end = max(t.finished_at for t in view.tasks
                          if t.round == last and t.finished_at is not None)
                model_id = (view.result or {})["model"]["id"]
                package = client.http.request("GET", f"/api/v1/models/{model_id}/weights")
                out[model] = {"result": view.result, "total": total, "setup": setup,
                              "rounds": round_times(starts, end.timestamp()),
                              "weights": final_weights({"model": package.json()})}
    return out


# -- (b) time per round: Flower ------------------------------------------------------------

FLOWER_APP = r'''
"""Flower app for healthspace benchmarks/federated_learning.py (written there, run here)."""
import json
import os
import sys
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
import torch
import flwr
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

CFG = json.load(open(os.environ.get("FLOWER_BENCH_CONFIG") or sys.argv[1]))
_DATA = {}


def net_for(inputs):
    widths = [inputs, *(CFG["hidden"] if CFG["model"] == "mlp" else []), 1]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(fan_in, fan_out, dtype=torch.float64))
    return torch.nn.Sequential(*layers)


def data(context):
    pid = int(context.node_config["partition-id"])
    if pid not in _DATA:
        with np.load(os.path.join(CFG["data"], f"site_{pid}.npz")) as raw:
            _DATA[pid] = (torch.from_numpy(raw["X"]), torch.from_numpy(raw["y"]))
    return _DATA[pid]


client = ClientApp()


@client.train()
def fit(msg: Message, context: Context) -> Message:
    X, y = data(context)
    net = net_for(X.shape[1])
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    rnd = int(msg.content["config"]["server-round"])
    opt = torch.optim.SGD(net.parameters(), lr=CFG["lr"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng([CFG["seed"], rnd])  # the batch order fl_train uses
    total = 0.0
    for _ in range(CFG["epochs"]):
        order = rng.permutation(len(y))
        for lo in range(0, len(order), CFG["batch_size"]):
            idx = torch.from_numpy(order[lo:lo + CFG["batch_size"]])
            opt.zero_grad()
            loss = loss_fn(net(X[idx]).squeeze(1), y[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
    metrics = MetricRecord({"train_loss": total / (len(y) * CFG["epochs"]),
                            "torch_threads": torch.get_num_threads(), "num-examples": len(y)})
    content = RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    X, y = data(context)
    net = net_for(X.shape[1])
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    with torch.no_grad():
        logits = net(X).squeeze(1)
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
        p = torch.sigmoid(logits)
        brier = float(((p - y) ** 2).mean())
    metrics = MetricRecord({"eval_loss": loss, "brier": brier, "num-examples": len(y)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    n = CFG["sites"]
    init = np.load(os.path.join(CFG["data"], "init.npy"))
    net = net_for(CFG["inputs"])
    torch.nn.utils.vector_to_parameters(torch.from_numpy(init), net.parameters())
    marks = []

    def mark(server_round, arrays):
        marks.append(time.perf_counter())
        return None

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n,
                      min_evaluate_nodes=n, min_available_nodes=n)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()),
                            num_rounds=CFG["rounds"], evaluate_fn=mark)
    net.load_state_dict(result.arrays.to_torch_state_dict())
    flat = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy()
    np.save(os.path.join(CFG["data"], "final.npy"), flat)
    last = result.train_metrics_clientapp.get(CFG["rounds"]) or {}
    with open(os.path.join(CFG["data"], "marks.json"), "w") as fh:
        json.dump({"marks": marks, "client_metrics": {k: float(v) for k, v in last.items()}},
                  fh)


if __name__ == "__main__":
    import ray

    started = time.perf_counter()
    run_simulation(server_app=server, client_app=client, num_supernodes=CFG["sites"],
                   backend_name="ray",
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"include_dashboard": False,
                                                 "logging_level": "error"}})
    with open(os.path.join(CFG["data"], "marks.json")) as fh:
        out = json.load(fh)
    out.update(total=time.perf_counter() - started, flwr=flwr.__version__,
               ray=ray.__version__, torch=torch.__version__)
    with open(os.path.join(CFG["data"], "run.json"), "w") as fh:
        json.dump(out, fh)
'''

FLOWER_CHECK = ("import flwr, ray, torch; from flwr.simulation import run_simulation; "
                "print(flwr.__version__, torch.__version__)")


def flower_env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    return {**keep, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DISABLE_IMPORT_WARNING": "1", "PYTHONUNBUFFERED": "1"}


def ensure_flower(venv: Path) -> tuple[Path | None, str]:
    """The Flower virtualenv's python, created and filled on first use, or None and why."""
    python = venv / "bin" / "python"

    def ready() -> str | None:
        if not python.exists():
            return None
        probe = subprocess.run([str(python), "-c", FLOWER_CHECK], capture_output=True,
                               text=True, env=flower_env(), timeout=300)
        return probe.stdout.strip() if probe.returncode == 0 else None

    found = ready()
    if found is not None:
        return python, found
    console.print(f"[dim]creating the Flower virtualenv {venv} (flwr {FLWR_VERSION}, torch "
                  f"{TORCH_VERSION}) …[/]")
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", f"flwr[simulation]=={FLWR_VERSION}",
              f"torch=={TORCH_VERSION}", "numpy", "pandas"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, env=flower_env(),
                                  timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(step[:4])} failed: {exc}"
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            return None, f"{' '.join(step[:4])} … exited {done.returncode}:\n{tail}"
    found = ready()
    if found is None:
        return None, f"Flower was installed into {venv} but `{FLOWER_CHECK}` fails there"
    return python, found


FLOWER_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "hsbench"
version = "1.0.0"
description = "healthspace benchmark app"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "healthspace"

[tool.flwr.app.components]
serverapp = "hsbench_app:server"
clientapp = "hsbench_app:client"
"""


def flower_inputs(args: argparse.Namespace, tables: dict[str, Path], model: str,
                  features: list[str], prep: Preparation, data: Path) -> Path:
    """Each site's encoded rows, the initial weights and the run's settings, for the app."""
    data.mkdir(parents=True, exist_ok=True)
    for name in ("marks.json", "final.npy", "run.json"):
        (data / name).unlink(missing_ok=True)
    for i, path in enumerate(tables.values()):
        rows = read_rows(path, features)
        np.savez(data / f"site_{i}.npz", X=np.ascontiguousarray(prep.encode(rows)),
                 y=rows[TARGET].to_numpy(dtype=np.float64))
    arch = architecture(model, len(prep.columns), args.hidden)
    np.save(data / "init.npy", initial_weights(arch, args.seed))
    config = {"data": str(data), "sites": len(tables), "inputs": len(prep.columns),
              "model": model, "hidden": args.hidden, "rounds": args.rounds,
              "epochs": args.local_epochs, "batch_size": args.batch_size, "lr": args.lr,
              "seed": args.seed}
    (data / "config.json").write_text(json.dumps(config))
    return data / "config.json"


def flower_outcome(args: argparse.Namespace, data: Path, wall: float, log: Path
                   ) -> dict[str, Any]:
    if not (data / "marks.json").exists() or not (data / "final.npy").exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the Flower run left no result; log {log}:\n{tail}")
    run = json.loads((data / "marks.json").read_text())
    if (data / "run.json").exists():
        run.update(json.loads((data / "run.json").read_text()))
    marks = run["marks"]
    if len(marks) != args.rounds + 1:
        raise RuntimeError(f"Flower marked {len(marks)} evaluations, expected {args.rounds + 1}")
    return {"rounds": round_times(marks[:-1], marks[-1]), "total": wall,
            "weights": np.load(data / "final.npy"), "versions": run}


def flower_simulation(python: Path, args: argparse.Namespace, tables: dict[str, Path],
                      model: str, features: list[str], prep: Preparation, workdir: Path
                      ) -> dict[str, Any]:
    """The same model, rows and schedule in Flower's simulation engine (one subprocess)."""
    data = workdir / f"flower-sim-{model}"
    config = flower_inputs(args, tables, model, features, prep, data)
    app = workdir / "flower_app.py"
    app.write_text(FLOWER_APP)
    log = data / "flower.log"
    started = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run([str(python), str(app), str(config)], stdout=fh,
                              stderr=subprocess.STDOUT, env=flower_env(), cwd=data,
                              timeout=1800)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the Flower run exited {done.returncode}; log {log}:\n{tail}")
    return flower_outcome(args, data, time.perf_counter() - started, log)


def _wait_log(log: Path, text: str, count: int, process: subprocess.Popen[bytes],
              timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log.name}: the process exited {process.returncode}")
        if log.exists() and log.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{log.name}: no {count} × {text!r} after {timeout:.0f}s")


def flower_deployment(python: Path, args: argparse.Namespace, tables: dict[str, Path],
                      model: str, features: list[str], prep: Preparation, workdir: Path
                      ) -> dict[str, Any]:
    """The same app in Flower's deployment engine: a flower-superlink and one
    flower-supernode per site on loopback (insecure, default subprocess isolation), started
    with ``flwr run``; OMP/MKL threads as for our node processes."""
    from healthspace.launch import free_port

    data = workdir / f"flower-dep-{model}"
    config = flower_inputs(args, tables, model, features, prep, data)
    app, home = workdir / "flower-dep-app", workdir / "flower-home"
    app.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    (app / "hsbench_app.py").write_text(FLOWER_APP)
    (app / "pyproject.toml").write_text(FLOWER_PYPROJECT)
    port = free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    env = {**flower_env(), "FLWR_HOME": str(home), "FLOWER_BENCH_CONFIG": str(config),
           "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if args.node_threads > 0:
        env.update(dict.fromkeys(THREAD_VARS, str(args.node_threads)))
    bin_dir = python.parent
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=data)
        processes.append(proc)
        return proc

    started = time.perf_counter()
    try:
        link_log = data / "superlink.log"
        link = spawn([str(bin_dir / "flower-superlink"), "--insecure", "--port", str(port),
                      "--database", str(data / "superlink.db")], link_log)
        _wait_log(link_log, "Uvicorn running", 1, link, 60)
        for i in range(len(tables)):
            spawn([str(bin_dir / "flower-supernode"), "--insecure", "--superlink",
                   f"127.0.0.1:{port}", "--port", str(free_port()), "--node-config",
                   f"partition-id={i} num-partitions={len(tables)}"], data / f"supernode{i}.log")
        _wait_log(link_log, "Activated node_id", len(tables), link, 60)
        log = data / "flwr-run.log"
        with log.open("w") as fh:
            done = subprocess.run([str(bin_dir / "flwr"), "run", ".", "bench", "--stream"],
                                  stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=app,
                                  timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"flwr run exited {done.returncode}; log {log}")
        return flower_outcome(args, data, time.perf_counter() - started, log)
    finally:
        for proc in reversed(processes):
            proc.terminate()
        for proc in reversed(processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def speed(args: argparse.Namespace, tables: dict[str, Path], features: list[str],
          pooled: pd.DataFrame, root: Path) -> None:
    # Flower gets the standardisation the network agreed on in fl_train's first round.
    ratios: list[str] = []
    ours = {model: ours_sim(args, tables, model, features) for model in ("logistic", "mlp")}
    prep = Preparation.from_dict(ours["logistic"]["result"]["model"]["preparation"])
    X = prep.encode(pooled)
    y = pooled[TARGET].to_numpy(dtype=np.float64)
    hub: dict[str, dict[str, Any]] = {}
    if not args.skip_hub:
        try:
            hub = ours_hub(args, tables, root / "fed", features)
        except Exception as exc:  # report it and go on with the rest
            console.print(f"[red]the live hub run failed, skipped:[/] {exc}")
    # flower[engine label][model]: the simulation engine, and the deployment engine if asked.
    flower: dict[str, dict[str, dict[str, Any]]] = {}
    if args.skip_flower:
        console.print("[yellow]--skip-flower: Flower is not run[/]")
    else:
        python, found = ensure_flower(args.flower_venv)
        if python is None:
            console.print(f"[red]Flower cannot be installed or imported; part (b) against "
                          f"Flower is skipped.[/]\n{found}")
        else:
            engines = [("simulation", flower_simulation)]
            if args.flower_deployment:
                engines.append(("deployment", flower_deployment))
            for kind, runner in engines:
                runs: dict[str, dict[str, Any]] = {}
                for model in ("logistic", "mlp"):
                    try:
                        runs[model] = runner(python, args, tables, model, features, prep, root)
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                        console.print(f"[red]Flower {kind} ({model}) failed, skipped:[/] {exc}")
                if not runs:
                    continue
                info = next(iter(runs.values()))["versions"]
                threads = info.get("client_metrics", {}).get("torch_threads")
                if kind == "simulation":
                    label = f"simulation: Ray {info.get('ray', '?')}, 1 CPU/client"
                    console.print(f"[dim]Flower {info.get('flwr')}, torch {info.get('torch')} "
                                  f"in {args.flower_venv}[/]")
                else:
                    label = (f"deployment: superlink + {len(tables)} supernodes, "
                             f"{args.node_threads or 'unset'} thread(s)")
                console.print(f"[dim]Flower {kind}: torch threads per client {threads}[/]")
                flower[label] = runs
    table = Table(title=f"(b) seconds per training round, {len(tables)} sites, "
                        f"{len(pooled):,} rows, {args.rounds} rounds (target ours/Flower ≤ 1)")
    for column in ("model", "system", "engine", "s/round median", "mean", "total s",
                   "final AUC", "max |Δw| vs sim"):
        table.add_column(column, justify="left" if column in ("model", "system", "engine")
                         else "right")
    for model in ("logistic", "mlp"):
        arch = architecture(model, X.shape[1], args.hidden)
        label = model if model == "logistic" else f"mlp {args.hidden}"
        systems = [("healthspace", "in-process: simulate_tables", ours[model])]
        if model in hub:
            threads = f"{args.node_threads} thread(s)" if args.node_threads else "threads unset"
            systems.append(("healthspace", f"hub + {len(tables)} node processes, {threads}",
                            hub[model]))
        for how, runs in flower.items():
            if model in runs:
                systems.append((f"Flower {FLWR_VERSION}", how, runs[model]))
        for system, how, run in systems:
            auc = exact_auc(predict(arch, run["weights"], X), y)
            gap = float(np.max(np.abs(run["weights"] - ours[model]["weights"])))
            table.add_row(label, system, how, f"{statistics.median(run['rounds']):.3f}",
                          f"{statistics.fmean(run['rounds']):.3f}", f"{run['total']:.1f}",
                          f"{auc:.4f}", f"{gap:.1e}")
        for how, runs in flower.items():
            if model not in runs:
                continue
            base = statistics.median(runs[model]["rounds"])
            parts = [f"{statistics.median(run['rounds']) / base:.3g} ({ours_how.split(':')[0]})"
                     for system, ours_how, run in systems if system == "healthspace"]
            ratios.append(f"{label}: ours / Flower {how.split(':')[0]}, s/round medians = "
                          f"{', '.join(parts)}")
    console.print(table)
    console.print("[dim]total s: ours in-process, the simulate_tables call (CSV loading "
                  "included); hub, submit → result with the processes up"
                  + (f" (start-up {hub['logistic']['setup']:.1f}s)" if "logistic" in hub
                     else "")
                  + "; Flower simulation, the whole subprocess (Python and Ray start-up); "
                    "Flower deployment, superlink start → flwr run done[/]")
    if flower:
        console.print("[dim]Flower's round time has a floor from its reply polling (flwr "
                      "1.42): the simulation's in-memory grid polls every 0.1 s (train + "
                      "evaluate: ≥ 0.2 s a round); in deployment the ServerApp's grid polls "
                      "every 3 s, an idle supernode every 3 s, and each message starts a "
                      "ClientApp process[/]")
    for line in ratios:
        console.print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--persons", type=int, default=4000, help="persons per site")
    parser.add_argument("--seed", type=int, default=1, help="synthetic data and training seed")
    parser.add_argument("--window", type=int, default=1825,
                        help="outcome window: complication within 1..N days")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, nargs="+", default=[16],
                        help="MLP hidden layer sizes")
    parser.add_argument("--holdout", type=float, default=0.25,
                        help="(a) share of each site's rows held out for validation")
    parser.add_argument("--skip-flower", action="store_true", help="skip the Flower runs")
    parser.add_argument("--flower-deployment", action="store_true",
                        help="also run Flower's deployment engine (superlink + supernodes; slow)")
    parser.add_argument("--skip-hub", action="store_true",
                        help="skip the run through real hub and node processes")
    parser.add_argument("--node-threads", type=int, default=1,
                        help="OMP/MKL threads of each hub and node process (0: unset)")
    parser.add_argument("--flower-venv", type=Path,
                        default=Path(tempfile.gettempdir()) / "healthspace-bench-flwr",
                        help="virtualenv for Flower (created when missing)")
    parser.add_argument("--workdir", type=Path, default=None, help="kept if given")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fl-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        summary = generate(root / "net", sites=args.sites, persons=args.persons, seed=args.seed)
        sites = {name: root / "net" / name for name in summary.sites}
        dataset = dataset_spec(args.window)
        features = [c["name"] for c in dataset["covariates"]]
        (root / "tables").mkdir(exist_ok=True)
        tables = build_tables(sites, dataset, root / "tables")
        pooled = pooled_rows(tables, features, args.holdout, args.seed)
        console.print(f"data: {args.sites} sites × {args.persons:,} persons → "
                      f"{len(pooled):,} type 2 diabetes patients with all covariates, "
                      f"{int(pooled[TARGET].sum())} complications within {args.window} days "
                      f"({time.perf_counter() - started:.1f}s)")
        accuracy(args, sites, dataset, pooled, features)
        speed(args, tables, features, pooled, root)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    console.print(f"[dim]total {time.perf_counter() - started:.0f}s[/]")


if __name__ == "__main__":
    main()
