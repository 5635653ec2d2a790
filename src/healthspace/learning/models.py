"""The two trainable models — logistic regression (numpy) and a small MLP (PyTorch, CPU).

A model is a flat float64 weight vector plus an architecture. The hub initialises and averages
vectors with numpy only; nodes train them. Local training is plain mini-batch SGD on the mean
binary cross-entropy, with FedProx's proximal term ``μ/2·||w − w_global||²`` when μ > 0.
Batches follow ``batch_order``: one permutation per epoch from ``numpy.random.default_rng``
seeded by (seed, round), so a centralised run with the same seed and schedule sees the same
batches as a single node does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special

from healthspace.core.errors import InvalidInput

Kind = Literal["logistic", "mlp"]


@dataclass(frozen=True)
class Architecture:
    """What a weight vector means: the model kind, its input width and hidden layer sizes."""

    kind: Kind
    inputs: int
    hidden: tuple[int, ...] = ()

    def layers(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of each linear layer; logistic regression is one layer."""
        widths = [self.inputs, *(self.hidden if self.kind == "mlp" else ()), 1]
        return list(zip(widths[:-1], widths[1:], strict=False))

    @property
    def size(self) -> int:
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in self.layers())

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": self.inputs, "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Architecture:
        return cls(raw["kind"], int(raw["inputs"]), tuple(int(h) for h in raw.get("hidden", ())))


def initial_weights(arch: Architecture, seed: int) -> np.ndarray:
    """Logistic regression starts at zero; MLP layers as PyTorch's ``nn.Linear`` default,
    U(−1/√fan_in, 1/√fan_in) for weights and biases, drawn with numpy from ``seed``."""
    if arch.kind == "logistic":
        return np.zeros(arch.size)
    rng = np.random.default_rng([seed, 0x1417])
    parts: list[np.ndarray] = []
    for fan_in, fan_out in arch.layers():
        bound = 1.0 / math.sqrt(fan_in)
        parts.append(rng.uniform(-bound, bound, size=fan_in * fan_out))  # (out, in) row-major
        parts.append(rng.uniform(-bound, bound, size=fan_out))
    return np.concatenate(parts)


def batch_order(n: int, seed: int, round_no: int, epochs: int) -> list[np.ndarray]:
    """One permutation of ``range(n)`` per local epoch, for training round ``round_no``."""
    rng = np.random.default_rng([seed, round_no])
    return [rng.permutation(n) for _ in range(epochs)]


@dataclass(frozen=True)
class Schedule:
    """Local training settings of one round."""

    epochs: int
    batch_size: int
    learning_rate: float
    mu: float = 0.0  # FedProx proximal weight; 0 is FedAvg


def train(arch: Architecture, weights: np.ndarray, X: np.ndarray, y: np.ndarray,
          schedule: Schedule, seed: int, round_no: int) -> np.ndarray:
    """The weights after ``schedule.epochs`` epochs of SGD from ``weights`` on (X, y)."""
    if len(y) == 0:
        return weights.copy()
    orders = batch_order(len(y), seed, round_no, schedule.epochs)
    if arch.kind == "logistic":
        return _train_logistic(weights, X, y, schedule, orders)
    return _TorchMlp(arch).train(weights, X, y, schedule, orders)


def predict(arch: Architecture, weights: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Predicted probabilities P(y = 1 | x)."""
    if arch.kind == "logistic":
        return np.asarray(special.expit(X @ weights[:-1] + weights[-1]))
    return _TorchMlp(arch).predict(weights, X)


def log_loss_sum(p: np.ndarray, y: np.ndarray) -> float:
    """Σ binary cross-entropy, probabilities clipped to [1e-12, 1 − 1e-12]."""
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.sum(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _train_logistic(w: np.ndarray, X: np.ndarray, y: np.ndarray, schedule: Schedule,
                    orders: list[np.ndarray]) -> np.ndarray:
    start = w.copy()
    w = w.copy()
    for order in orders:
        for lo in range(0, len(order), schedule.batch_size):
            idx = order[lo:lo + schedule.batch_size]
            xb, yb = X[idx], y[idx]
            residual = special.expit(xb @ w[:-1] + w[-1]) - yb
            grad = np.empty_like(w)
            grad[:-1] = xb.T @ residual / len(idx)
            grad[-1] = residual.mean()
            if schedule.mu:
                grad += schedule.mu * (w - start)
            w -= schedule.learning_rate * grad
    return w


def load_torch() -> Any:
    """PyTorch, set to one intra-op thread (small models: thread hand-offs cost more than
    they save, about 10× per step with several nodes on one machine); a clear error if the
    optional extra is missing. Loading takes seconds, so training asks for it in round 1."""
    try:
        import torch
    except ImportError:
        raise InvalidInput("the mlp model needs PyTorch on this machine: "
                           "pip install 'healthspace[ml]' (torch==2.13.0)",
                           field="params.model") from None
    if torch.get_num_threads() > 1:
        torch.set_num_threads(1)
    return torch


class _TorchMlp:
    """The MLP as a float64 ``torch.nn.Sequential`` of Linear and ReLU layers."""

    def __init__(self, arch: Architecture) -> None:
        torch = load_torch()
        self.torch = torch
        layers: list[Any] = []
        for i, (fan_in, fan_out) in enumerate(arch.layers()):
            if i:
                layers.append(torch.nn.ReLU())
            layers.append(torch.nn.Linear(fan_in, fan_out, dtype=torch.float64))
        self.net = torch.nn.Sequential(*layers)

    def _load(self, weights: np.ndarray) -> None:
        torch = self.torch
        with torch.no_grad():  # a copy: the parameters must never alias the caller's array
            vector = torch.from_numpy(np.array(weights, dtype=np.float64, copy=True))
            torch.nn.utils.vector_to_parameters(vector, self.net.parameters())

    def _flat(self) -> np.ndarray:
        vec = self.torch.nn.utils.parameters_to_vector(self.net.parameters())
        return np.asarray(vec.detach().numpy(), dtype=np.float64).copy()

    def train(self, weights: np.ndarray, X: np.ndarray, y: np.ndarray, schedule: Schedule,
              orders: list[np.ndarray]) -> np.ndarray:
        torch = self.torch
        self._load(weights)
        anchor = [p.detach().clone() for p in self.net.parameters()]
        opt = torch.optim.SGD(self.net.parameters(), lr=schedule.learning_rate)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        xt = torch.from_numpy(np.array(X, dtype=np.float64))  # writable copies for torch
        yt = torch.from_numpy(np.array(y, dtype=np.float64))
        for order in orders:
            for lo in range(0, len(order), schedule.batch_size):
                idx = torch.from_numpy(order[lo:lo + schedule.batch_size])
                opt.zero_grad()
                loss = loss_fn(self.net(xt[idx]).squeeze(1), yt[idx])
                if schedule.mu:
                    loss = loss + schedule.mu / 2 * sum(
                        ((p - a) ** 2).sum() for p, a in zip(self.net.parameters(), anchor,
                                                             strict=True))
                loss.backward()
                opt.step()
        return self._flat()

    def predict(self, weights: np.ndarray, X: np.ndarray) -> np.ndarray:
        torch = self.torch
        self._load(weights)
        with torch.no_grad():
            logits = self.net(torch.from_numpy(np.array(X, dtype=np.float64)))
        return np.asarray(torch.sigmoid(logits).squeeze(1).numpy(), dtype=np.float64)
