"""learning.models: layout, batch order, SGD and prediction against plain torch and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from healthspace.learning.models import (
    Architecture,
    Schedule,
    batch_order,
    initial_weights,
    log_loss_sum,
    predict,
    train,
)

TOL = 1e-12


def data(n=120, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (rng.uniform(size=n) < special.expit(X @ np.linspace(1, -1, d) + 0.3)).astype(float)
    return X, y


def torch_net(arch: Architecture) -> torch.nn.Module:
    widths = [arch.inputs, *arch.hidden, 1] if arch.kind == "mlp" else [arch.inputs, 1]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(a, b, dtype=torch.float64))
    return torch.nn.Sequential(*layers)


def torch_sgd(arch, start, X, y, *, epochs, batch_size, lr, mu, seed, round_no):
    net = torch_net(arch)
    with torch.no_grad():
        vector_to_parameters(torch.from_numpy(start.copy()), net.parameters())
    anchor = parameters_to_vector(net.parameters()).detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    rng = np.random.default_rng([seed, round_no])
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for lo in range(0, len(y), batch_size):
            idx = torch.from_numpy(order[lo:lo + batch_size])
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(xt[idx]).squeeze(1), yt[idx])
            loss = loss + mu / 2 * ((parameters_to_vector(net.parameters()) - anchor) ** 2).sum()
            loss.backward()
            opt.step()
    return parameters_to_vector(net.parameters()).detach().numpy()


@pytest.mark.parametrize(("arch", "size"), [
    (Architecture("logistic", 5), 6),
    (Architecture("logistic", 5, (16,)), 6),  # hidden is ignored for logistic regression
    (Architecture("mlp", 5, (8,)), 5 * 8 + 8 + 8 + 1),
    (Architecture("mlp", 3, (4, 2)), 3 * 4 + 4 + 4 * 2 + 2 + 2 + 1),
])
def test_size_matches_torch_parameter_count(arch, size):
    assert arch.size == size
    assert sum(p.numel() for p in torch_net(arch).parameters()) == size
    assert Architecture.from_dict(arch.as_dict()) == Architecture(
        arch.kind, arch.inputs, arch.hidden)


def test_initial_weights_layout_and_bounds():
    assert np.array_equal(initial_weights(Architecture("logistic", 4), 3), np.zeros(5))
    arch = Architecture("mlp", 5, (8, 3))
    w = initial_weights(arch, 3)
    assert np.array_equal(w, initial_weights(arch, 3))
    assert not np.array_equal(w, initial_weights(arch, 4))
    net = torch_net(arch)
    with torch.no_grad():
        vector_to_parameters(torch.from_numpy(w.copy()), net.parameters())
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    offset = 0
    for layer in linears:  # (out, in) row-major weight, then bias, as torch lays them out
        fan_out, fan_in = layer.weight.shape
        bound = 1 / math.sqrt(fan_in)
        block = w[offset:offset + fan_in * fan_out].reshape(fan_out, fan_in)
        assert np.array_equal(layer.weight.detach().numpy(), block)
        offset += fan_in * fan_out
        assert np.array_equal(layer.bias.detach().numpy(), w[offset:offset + fan_out])
        offset += fan_out
        both = np.concatenate([block.ravel(), layer.bias.detach().numpy()])
        assert np.all(np.abs(both) <= bound) and np.abs(both).max() > bound / 2
    assert offset == arch.size


def test_batch_order_is_one_seeded_permutation_per_epoch():
    rng = np.random.default_rng([7, 3])
    expected = [rng.permutation(50) for _ in range(3)]
    got = batch_order(50, 7, 3, 3)
    assert len(got) == 3
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert not np.array_equal(batch_order(50, 7, 4, 1)[0], expected[0])


@pytest.mark.parametrize("arch", [Architecture("logistic", 4), Architecture("mlp", 4, (5,)),
                                  Architecture("mlp", 4, (6, 3))], ids=["logistic", "mlp1",
                                                                        "mlp2"])
@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_train_equals_torch_sgd(arch, mu):
    X, y = data()
    rng = np.random.default_rng(1)
    start = initial_weights(arch, 2) + (rng.normal(0, 0.1, arch.size) if mu else 0)
    schedule = Schedule(epochs=2, batch_size=17, learning_rate=0.3, mu=mu)
    got = train(arch, start.copy(), X, y, schedule, seed=4, round_no=2)
    expected = torch_sgd(arch, start, X, y, epochs=2, batch_size=17, lr=0.3, mu=mu, seed=4,
                         round_no=2)
    assert np.max(np.abs(got - expected)) <= TOL
    assert np.max(np.abs(got - start)) > 1e-3


@pytest.mark.parametrize("arch", [
    Architecture("logistic", 4),
    Architecture("mlp", 4, (5,)),
], ids=["logistic", "mlp"])
def test_train_leaves_the_incoming_weights_unchanged(arch):
    X, y = data()
    start = initial_weights(arch, 2) + 0.01
    before = start.copy()
    trained = train(arch, start, X, y, Schedule(1, 16, 0.3), seed=0, round_no=1)
    assert np.max(np.abs(trained - before)) > 1e-3
    assert np.array_equal(start, before)


def test_train_on_no_rows_returns_a_copy():
    arch = Architecture("logistic", 2)
    start = np.array([0.1, 0.2, 0.3])
    got = train(arch, start, np.zeros((0, 2)), np.zeros(0), Schedule(1, 8, 0.1), 0, 1)
    assert np.array_equal(got, start) and got is not start


def test_predict_matches_numpy_forward_pass():
    X, _ = data(n=40, d=3)
    w = np.array([0.5, -1.0, 2.0, 0.1])
    assert np.max(np.abs(predict(Architecture("logistic", 3), w, X)
                         - 1 / (1 + np.exp(-(X @ w[:3] + 0.1))))) <= TOL
    arch = Architecture("mlp", 3, (4, 2))
    w = initial_weights(arch, 9)
    W1, b1 = w[:12].reshape(4, 3), w[12:16]
    W2, b2 = w[16:24].reshape(2, 4), w[24:26]
    W3, b3 = w[26:28].reshape(1, 2), w[28:29]
    h = np.maximum(X @ W1.T + b1, 0)
    h = np.maximum(h @ W2.T + b2, 0)
    expected = 1 / (1 + np.exp(-(h @ W3.T + b3)[:, 0]))
    assert np.max(np.abs(predict(arch, w, X) - expected)) <= TOL


def test_log_loss_sum_clips_probabilities():
    p = np.array([0.2, 0.9, 0.0, 1.0])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    expected = -(np.log(0.8) + np.log(0.9) + np.log(1e-12) + np.log(1 - 1e-12))
    assert log_loss_sum(p, y) == pytest.approx(expected, rel=1e-12)
