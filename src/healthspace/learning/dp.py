"""Differential privacy for model updates: clip each node's update, add Gaussian noise.

The unit of privacy is a node's whole contribution to a round (its update is clipped to L2
norm ``clip``), so the network sum of clipped updates has sensitivity ``clip`` and Gaussian
noise of standard deviation ``z·clip`` on it is ρ = 1/(2z²)-zCDP. Rounds compose in zCDP and
the total converts to (ε, δ) with OpenDP's accountant (``make_zCDP_to_approxDP``).

Under secure aggregation each of m nodes adds noise of std ``z·clip/√m``: only the sum is
decoded, and it carries the full noise. In clear every node adds the full ``z·clip``, since
the hub sees each update. A node that drops out of a round leaves the sum with less noise
than planned; the result reports the noise actually added.
"""

from __future__ import annotations

import math
import secrets
from functools import lru_cache

import numpy as np

from healthspace.core.errors import InvalidInput


@lru_cache(maxsize=256)
def epsilon_spent(noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε after ``rounds`` Gaussian releases of noise std ``noise_multiplier`` × sensitivity."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    release = dp.m.make_gaussian(*space, scale=float(noise_multiplier))
    total = dp.c.make_composition([release] * int(rounds))
    return float(dp.c.make_zCDP_to_approxDP(total).map(1.0).epsilon(float(delta)))


def noise_multiplier(epsilon: float, delta: float, rounds: int) -> float:
    """The smallest noise multiplier z (to 0.1 %) whose ``rounds`` releases spend ≤ ε."""
    if epsilon <= 0 or not 0 < delta < 1 or rounds < 1:
        raise InvalidInput("DP training needs ε > 0, 0 < δ < 1 and at least one round",
                           field="params.dp_epsilon")
    lo, hi = 1e-3, 1.0
    while epsilon_spent(hi, rounds, delta) > epsilon:
        hi *= 2
        if hi > 1e6:
            raise InvalidInput(f"ε={epsilon:g} is too small to calibrate",
                               field="params.dp_epsilon")
    while hi - lo > 1e-3 * hi:
        mid = math.sqrt(lo * hi)
        if epsilon_spent(mid, rounds, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def clip(update: np.ndarray, bound: float) -> tuple[np.ndarray, bool]:
    """``update`` scaled down to L2 norm ``bound`` if longer; and whether it was."""
    norm = float(np.linalg.norm(update))
    if norm <= bound or norm == 0:
        return update, False
    return update * (bound / norm), True


def gaussian(size: int, std: float) -> np.ndarray:
    """Gaussian noise from a generator seeded by the operating system's CSPRNG."""
    rng = np.random.default_rng(secrets.randbits(128))
    return rng.normal(0.0, std, size=size)
