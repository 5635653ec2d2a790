"""Federated training (FedAvg / FedProx) of logistic regression or an MLP, with evaluation.

Rounds of the protocol (docs/federated-learning.md):

1. **statistics** (two passes): each node sums row counts, events and numeric features and
   lists text-feature levels, then sums squared deviations from the network means;
   ``combine`` fixes the standardisation and initial weights;
2. **training round t** (t = 1..R): each node evaluates the incoming model w_{t−1} on its rows
   (fine score histograms per class, Brier and log-loss sums) and, if selected, trains it
   locally and sends its sample-size-weighted weights; ``combine`` averages them into w_t;
3. **final**: the chosen model (the last one, or the best by validation loss when stopped
   early) is evaluated once more, with per-site figures where disclosure rules allow.

Every array a node sends is summable, so under secure aggregation the hub decodes only
network sums. With ``dp_epsilon`` each node's update is clipped and Gaussian noise is added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationInfo, field_validator

from healthspace.analyses.base import Final, LocalContext, NextRound, Params, Summable
from healthspace.analyses.registry import register
from healthspace.analyses.secure import SummedAnalysis, sum_clear
from healthspace.core.encoding import decode_array, encode_array
from healthspace.core.errors import InvalidInput, Refused
from healthspace.learning import dp
from healthspace.learning.evaluation import Binning, local_parts, metrics, site_summary
from healthspace.learning.features import (
    Preparation,
    feature_kinds,
    feature_sums,
    squared_deviations,
    usable_rows,
)
from healthspace.learning.models import (
    Architecture,
    Schedule,
    initial_weights,
    load_torch,
    predict,
    train,
)

TABLE = "analysis_data"
MAX_TRAINING_ROUNDS = 500
_INTEGER = frozenset({"n_train", "n_valid", "events", "train_hist_pos", "train_hist_neg",
                      "valid_hist_pos", "valid_hist_neg"})


class FlParams(Params):
    target: str = Field(min_length=1, max_length=63)
    features: list[str] = Field(min_length=1, max_length=200)
    model: Literal["logistic", "mlp"] = "logistic"
    hidden: list[int] = Field(default=[16], min_length=1, max_length=3)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float = Field(default=0.01, ge=0, le=100)
    rounds: int = Field(default=20, ge=1, le=MAX_TRAINING_ROUNDS)
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=32, ge=1, le=1_000_000)
    learning_rate: float = Field(default=0.1, gt=0, le=10)
    fraction: float = Field(default=1.0, gt=0, le=1, description="share of nodes per round")
    min_nodes: int = Field(default=1, ge=1, description="stop if fewer nodes report a round")
    patience: int | None = Field(default=None, ge=1, description="early stopping (rounds)")
    min_delta: float = Field(default=1e-4, ge=0)
    holdout: float = Field(default=0.0, ge=0, le=0.5, description="validation share per node")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    calibration_bins: int = Field(default=10, ge=2, le=20)
    bins: int = Field(default=1000, ge=10, le=100_000)
    dp_epsilon: float | None = Field(default=None, gt=0, le=100)
    dp_delta: float = Field(default=1e-5, gt=0, lt=0.01)
    dp_clip: float = Field(default=1.0, gt=0, le=1e6)
    model_name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_.-]{0,62}$")
    intended_use: str | None = Field(default=None, max_length=2000)

    @field_validator("features")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("features must not repeat")
        return value

    @field_validator("hidden")
    @classmethod
    def _layer_sizes(cls, value: list[int]) -> list[int]:
        if any(h < 1 or h > 512 for h in value):
            raise ValueError("hidden layer sizes must be 1..512")
        return value

    @field_validator("bins")
    @classmethod
    def _nested(cls, value: int, info: ValidationInfo) -> int:
        calibration = info.data.get("calibration_bins")
        if calibration and value % calibration:
            raise ValueError(f"bins must be a multiple of calibration_bins ({calibration})")
        return value

    @property
    def binning(self) -> Binning:
        return Binning(self.bins, self.calibration_bins)

    @property
    def schedule(self) -> Schedule:
        mu = self.mu if self.strategy == "fedprox" else 0.0
        return Schedule(self.local_epochs, self.batch_size, self.learning_rate, mu)


def _split(n: int, params: FlParams) -> np.ndarray:
    """Which of a node's rows are held out for validation (fixed by the seed)."""
    if params.holdout <= 0:
        return np.zeros(n, dtype=bool)
    return np.random.default_rng([params.seed, 0x7A11D]).random(n) < params.holdout


def _rows(ctx: LocalContext, params: FlParams) -> tuple[pd.DataFrame, np.ndarray]:
    data = ctx.con.execute(f"SELECT * FROM {TABLE}").df()
    rows = usable_rows(data, params.target, params.features)
    ctx.records_used = len(rows)
    if len(rows) < ctx.min_cell_size:
        raise Refused(f"only {len(rows)} usable rows, below the minimum cell size "
                      f"{ctx.min_cell_size}; training is refused")
    return rows, _split(len(rows), params)


class FlTrain(SummedAnalysis):
    name = "fl_train"
    title = "Federated learning (FedAvg / FedProx) with federated evaluation"
    params_model = FlParams
    requires_cohort = False
    uses_table = True
    max_rounds = MAX_TRAINING_ROUNDS + 4
    dp_charge = "first_round"

    # -- node side ---------------------------------------------------------------------------

    def local_secure(
        self, ctx: LocalContext, params: Params, round_input: dict[str, Any] | None
    ) -> Summable:
        assert isinstance(params, FlParams)
        rows, held = _rows(ctx, params)
        if round_input is None:
            return self._statistics(ctx, params, rows, held)
        if round_input.get("phase") == "moments":
            deviations = squared_deviations(rows[~held], params.features, round_input["kinds"],
                                            round_input["means"])
            return Summable({}, {"deviations": deviations})
        prep = Preparation.from_dict(round_input["prep"])
        arch = Architecture.from_dict(round_input["arch"])
        weights = decode_array(round_input["weights"])
        X = prep.encode(rows)
        y = rows[params.target].to_numpy(dtype=np.float64)
        sums: dict[str, np.ndarray] = {}
        public: dict[str, Any] = {}
        if round_input.get("evaluate"):
            binning = params.binning
            p = predict(arch, weights, X)
            for prefix, mask in (("train_", ~held), ("valid_", held)):
                if prefix == "valid_" and params.holdout <= 0:
                    continue
                for label, value in local_parts(p[mask], y[mask], binning).items():
                    sums[prefix + label] = value
            if round_input.get("phase") == "final":
                own = site_summary(p, y, ctx.min_cell_size) if ctx.release_site_counts else None
                public["site"] = own
        if round_input.get("phase") == "train":
            sums.update(self._update(ctx, params, round_input, arch, weights, X[~held],
                                     y[~held]))
        return Summable(public, sums, _INTEGER & frozenset(sums))

    def _statistics(self, ctx: LocalContext, params: FlParams, rows: pd.DataFrame,
                    held: np.ndarray) -> Summable:
        if params.model == "mlp":
            load_torch()  # now, not in the first training round (a round deadline runs)
        kinds = feature_kinds(rows, params.features)
        trainset = rows[~held]
        total = feature_sums(trainset, params.features, kinds)
        levels = {name: sorted({str(v) for v in rows[name]})
                  for name, kind in kinds.items() if kind == "categorical"}
        events = int(trainset[params.target].sum())
        sums = {"n_train": np.asarray([len(trainset)]), "n_valid": np.asarray([int(held.sum())]),
                "events": np.asarray([events]), "sum": total}
        return Summable({"kinds": kinds, "levels": levels, "k": ctx.min_cell_size}, sums,
                        frozenset({"n_train", "n_valid", "events"}))

    def _update(self, ctx: LocalContext, params: FlParams, round_input: dict[str, Any],
                arch: Architecture, weights: np.ndarray, X: np.ndarray,
                y: np.ndarray) -> dict[str, np.ndarray]:
        selected = round_input.get("selected")
        if selected is not None and ctx.site not in selected:
            return {"update": np.zeros_like(weights), "weight": np.zeros(1)}
        round_no = int(round_input["train_round"])
        trained = train(arch, weights, X, y, params.schedule, params.seed, round_no)
        dp_std = round_input.get("dp_std")
        if dp_std is None:  # FedAvg: weights weighted by this node's training rows
            return {"update": len(y) * trained, "weight": np.asarray([float(len(y))])}
        clipped, _ = dp.clip(trained - weights, params.dp_clip)
        noisy = clipped + dp.gaussian(clipped.size, float(dp_std))
        return {"update": noisy, "weight": np.ones(1)}

    # -- hub side ----------------------------------------------------------------------------

    def combine(
        self,
        partials: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        if not partials:
            raise Refused("no node took part in training")
        sums, publics = sum_clear(partials)
        return self._combine(sums, publics, params, state, round, secure=False)

    def combine_secure(
        self,
        sums: Mapping[str, np.ndarray],
        publics: Mapping[str, dict[str, Any]],
        params: Params,
        state: dict[str, Any],
        round: int,
    ) -> Final | NextRound:
        return self._combine(dict(sums), dict(publics), params, state, round, secure=True)

    def _combine(self, sums: dict[str, np.ndarray], publics: dict[str, dict[str, Any]],
                 params: Params, state: dict[str, Any], round: int,
                 secure: bool) -> Final | NextRound:
        assert isinstance(params, FlParams)
        names = sorted(publics)
        if len(names) < params.min_nodes:
            raise Refused(f"only {len(names)} node(s) reported in round {round}, fewer than "
                          f"min_nodes {params.min_nodes}; training stopped")
        if round == 1:
            return self._statistics_done(sums, publics, params, secure)
        if state.get("phase") == "moments":
            return self._start(state, np.asarray(sums["deviations"]), names, params)
        state = dict(state)
        warnings = list(state.get("warnings", []))
        dropped = sorted(set(state["nodes"]) - set(names))
        if dropped:
            warnings.append(f"round {state['train_round']}: dropped {', '.join(dropped)} "
                            f"(failed or timed out); {len(names)} node(s) continue")
        state["warnings"] = warnings
        history = list(state["history"])
        if state["phase"] == "final":
            return self._finish(sums, publics, params, state, history, names, dropped)
        t = int(state["train_round"])
        if t > 1:
            history[-1] = {**history[-1], **_evaluation(sums, params, int(state["k"]))}
        history.append({"round": t, "nodes": len(names), "dropped": dropped,
                        "selected": state.get("selected")})
        weights = np.asarray(state["weights"], dtype=np.float64)
        weight_sum = float(sums["weight"][0])
        if weight_sum <= 0:
            new = weights  # nobody selected reported: the model stays
            warnings.append(f"round {t}: no selected node reported; the model is unchanged")
        elif state.get("dp") is not None:
            new = weights + np.asarray(sums["update"]) / weight_sum
        else:
            new = np.asarray(sums["update"]) / weight_sum
        best, stop = _track_best(state, history, params, weights)
        progress = {**history[-2], "rounds": params.rounds} if t > 1 else None
        if stop:
            history.pop()  # w_t is discarded unevaluated: the best earlier model is kept
        state.update(history=history, nodes=names, best=best)
        if stop or t >= params.rounds:
            chosen = np.asarray(best["weights"]) if stop else new
            if not stop:
                history[-1]["pending_final"] = True
            state.update(phase="final", weights=chosen.tolist(), stopped_early=stop,
                         selected_round=best["round"] if stop else t)
            return NextRound(self._input(state, "final", chosen), state, progress=progress)
        selection = _select(names, params, t + 1)
        state.update(train_round=t + 1, weights=new.tolist(), selected=selection)
        return NextRound(self._input(state, "train", new), state, progress=progress)

    def _statistics_done(self, sums: Mapping[str, np.ndarray],
                         publics: Mapping[str, dict[str, Any]], params: FlParams,
                         secure: bool) -> NextRound:
        """Counts, means and levels are known: ask for squared deviations from the means
        (the second pass of the standardisation)."""
        names = sorted(publics)
        kinds = publics[names[0]]["kinds"]
        if any(publics[s]["kinds"] != kinds for s in names):
            raise InvalidInput("nodes disagree on which features are numbers and which are "
                               "text; check the column types", field="params.features")
        levels: dict[str, set[str]] = {}
        for name in names:
            for feature, found in publics[name]["levels"].items():
                levels.setdefault(feature, set()).update(found)
        n = int(sums["n_train"][0])
        events = int(sums["events"][0])
        if events == 0 or events == n:
            raise InvalidInput(f"the target {params.target!r} has one class only in the "
                               f"training rows", field="params.target")
        total = np.asarray(sums["sum"], dtype=np.float64)
        numeric = [f for f in params.features if kinds[f] == "numeric"]
        stats = {"kinds": kinds, "levels": {f: sorted(v) for f, v in levels.items()}, "n": n,
                 "n_valid": int(sums["n_valid"][0]), "events": events, "sum": total.tolist(),
                 "k": max(int(publics[s].get("k", 10)) for s in names), "secure": secure,
                 "names": names}
        means = {f: float(total[i]) / n for i, f in enumerate(numeric)}
        state = {"phase": "moments", "stats": stats, "nodes": names}
        return NextRound({"phase": "moments", "kinds": kinds, "means": means}, state)

    def _start(self, state: dict[str, Any], deviations: np.ndarray, names: list[str],
               params: FlParams) -> NextRound:
        """Standardisation fixed: initialise the model and start training round 1."""
        stats = state["stats"]
        n, events, kinds, secure = stats["n"], stats["events"], stats["kinds"], stats["secure"]
        prep = Preparation.pooled(params.features, kinds, n, np.asarray(stats["sum"]),
                                  deviations, stats["levels"])
        warnings = []
        if names != stats["names"]:
            lost = ", ".join(sorted(set(stats["names"]) - set(names)))
            warnings.append(f"standardisation: {lost} dropped between its two passes; the "
                            "standard deviations leave out its rows")
        hidden = tuple(params.hidden) if params.model == "mlp" else ()
        arch = Architecture(params.model, len(prep.columns), hidden)
        weights = initial_weights(arch, params.seed)
        dp_state: dict[str, Any] | None = None
        if params.dp_epsilon is not None:
            z = dp.noise_multiplier(params.dp_epsilon, params.dp_delta, params.rounds)
            dp_state = {"epsilon": params.dp_epsilon, "delta": params.dp_delta,
                        "clip": params.dp_clip, "noise_multiplier": z,
                        "sigma": z * params.dp_clip, "rounds": params.rounds,
                        "unit": "one node's update in one round",
                        "accountant": "zCDP composition, OpenDP make_zCDP_to_approxDP"}
        state = {
            "prep": prep.as_dict(), "arch": arch.as_dict(), "weights": weights.tolist(),
            "phase": "train", "train_round": 1, "history": [], "nodes": names,
            "k": stats["k"], "dp": dp_state, "secure": secure, "warnings": warnings,
            "population": {"n_train": n, "n_valid": stats["n_valid"], "events": events,
                           "prevalence": events / n, "means": prep.means, "stds": prep.stds,
                           "levels": prep.levels},
            "selected": _select(names, params, 1),
        }
        return NextRound(self._input(state, "train", weights), state)

    @staticmethod
    def _input(state: dict[str, Any], phase: str, weights: np.ndarray) -> dict[str, Any]:
        return {"phase": phase, "prep": state["prep"], "arch": state["arch"],
                "weights": encode_array(np.asarray(weights, dtype=np.float64)),
                "train_round": state["train_round"], "selected": state.get("selected"),
                "evaluate": phase == "final" or int(state["train_round"]) > 1,
                "dp_std": _node_noise(state) if phase == "train" else None}

    def _finish(self, sums: Mapping[str, np.ndarray], publics: Mapping[str, dict[str, Any]],
                params: FlParams, state: dict[str, Any], history: list[dict[str, Any]],
                names: list[str], dropped: list[str]) -> Final:
        k = int(state["k"])
        final = _evaluation(sums, params, k)
        if history and history[-1].pop("pending_final", False):
            history[-1] = {**history[-1], **final}
        prep = Preparation.from_dict(state["prep"])
        weights = np.asarray(state["weights"], dtype=np.float64)
        result: dict[str, Any] = {
            "model": {"architecture": state["arch"], "preparation": state["prep"],
                      "columns": prep.columns, "weights": encode_array(weights),
                      "target": params.target},
            "metrics": _metric_block(sums, params, k, "train_"),
            "validation": _metric_block(sums, params, k, "valid_") if params.holdout else None,
            "rounds": [{key: value for key, value in entry.items() if key != "selected"}
                       for entry in history],
            "selected_round": int(state["selected_round"]),
            "stopped_early": bool(state.get("stopped_early")),
            "population": state["population"],
            "sites": {name: publics[name].get("site") for name in names},
            "nodes": names,
            "dp": state.get("dp"),
            "secure_aggregation": bool(state.get("secure")),
            "hyperparameters": params.model_dump(exclude={"intended_use", "model_name"}),
            "warnings": state.get("warnings", []),
        }
        return Final(result, progress={**final, "round": int(state["selected_round"]),
                                       "final": True, "nodes": len(names),
                                       "dropped": dropped})


def _metric_block(sums: Mapping[str, np.ndarray], params: FlParams, k: int,
                  prefix: str) -> dict[str, Any]:
    parts = {label[len(prefix):]: value for label, value in sums.items()
             if label.startswith(prefix)}
    return metrics(parts, params.binning, k)


def _evaluation(sums: Mapping[str, np.ndarray], params: FlParams, k: int) -> dict[str, Any]:
    """The figures a round's history entry carries for the model evaluated in it."""
    train_part = _metric_block(sums, params, k, "train_")
    entry = {"loss": train_part["loss"], "auc": train_part["auc"],
             "brier": train_part["brier"]}
    if params.holdout:
        valid = _metric_block(sums, params, k, "valid_")
        entry.update(validation_loss=valid["loss"], validation_auc=valid["auc"])
    return entry


def _track_best(state: dict[str, Any], history: list[dict[str, Any]], params: FlParams,
                weights: np.ndarray) -> tuple[dict[str, Any], bool]:
    """Best model so far by validation loss (training loss without a holdout) and whether
    ``patience`` evaluated rounds passed without an improvement of ``min_delta``."""
    # no best yet: monitor None (state is stored as JSON, which has no Infinity)
    best = dict(state.get("best") or {"round": 0, "monitor": None, "weights": None,
                                      "stale": 0})
    if len(history) < 2:
        return best, False
    evaluated = history[-2]  # the model this round evaluated: w_{t−1}
    monitor = evaluated.get("validation_loss" if params.holdout else "loss")
    if monitor is None:
        return best, False
    if best["monitor"] is None or monitor < best["monitor"] - params.min_delta:
        best = {"round": evaluated["round"], "monitor": monitor, "weights": weights.tolist(),
                "stale": 0}
    else:
        best["stale"] = int(best["stale"]) + 1
    return best, params.patience is not None and best["stale"] >= params.patience


def _node_noise(state: dict[str, Any]) -> float | None:
    """Each training node's noise std: the full σ in clear; under secure aggregation σ/√m
    for the m nodes training this round, so that only their decoded sum carries σ."""
    if state.get("dp") is None:
        return None
    sigma = float(state["dp"]["sigma"])
    if not state.get("secure"):
        return sigma
    return sigma / math.sqrt(len(state.get("selected") or state["nodes"]))


def _select(names: list[str], params: FlParams, round_no: int) -> list[str] | None:
    """The nodes that train in ``round_no``: all, or a seeded random ``fraction`` of them."""
    if params.fraction >= 1:
        return None
    size = max(1, math.ceil(params.fraction * len(names)))
    rng = np.random.default_rng([params.seed, round_no, 0x5E1])
    return sorted(str(s) for s in rng.choice(names, size=size, replace=False))


register(FlTrain())
