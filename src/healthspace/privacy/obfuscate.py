"""SHRINE-style obfuscation of feasibility counts: clamped Gaussian noise, binning, a low limit.

This mirrors i2b2/SHRINE: add Gaussian noise with σ = 1.7, clamp the noise to ±``clamp``
(SHRINE uses ±10, about 6 σ, so a repeated query cannot average far beyond it), round to a
multiple of ``bin_width`` (5) and show counts at or below ``low_limit`` as ``"≤ N"``. It is **not**
differential privacy: the noise is bounded, so the output distributions of neighbouring
datasets can differ by more than any fixed factor, and repeating a query averages the noise
away within the clamp. It hides exact small numbers from casual reading; use
:mod:`healthspace.privacy.dp` when a formal guarantee is needed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

Obfuscated = int | str


@dataclass(frozen=True)
class Obfuscation:
    sigma: float = 1.7
    clamp: float = 10.0
    bin_width: int = 5
    low_limit: int = 10

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.clamp < 0 or self.bin_width < 1 or self.low_limit < 0:
            raise ValueError("sigma > 0, clamp ≥ 0, bin_width ≥ 1 and low_limit ≥ 0 are needed")

    def label(self) -> str:
        return low_label(self.low_limit)


def low_label(low_limit: int) -> str:
    return f"≤ {low_limit}"


def _rng() -> np.random.Generator:
    # Seeded from the OS CSPRNG for every call: unpredictable, never reproducible on a node.
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


def obfuscate_count(
    n: int, config: Obfuscation | None = None, rng: np.random.Generator | None = None
) -> Obfuscated:
    """One obfuscated count: ``n`` plus clamped noise, binned; at or below the low limit, ``"≤ N"``.

    The low limit is applied to the noisy binned value, so the label itself carries noise and
    a count just above the limit is not revealed exactly by whether a number is shown.
    """
    cfg = config or Obfuscation()
    noise = float(np.clip((rng or _rng()).normal(0.0, cfg.sigma), -cfg.clamp, cfg.clamp))
    binned = int(round((n + noise) / cfg.bin_width)) * cfg.bin_width
    return cfg.label() if binned <= cfg.low_limit else binned


def is_low(value: Obfuscated) -> bool:
    return isinstance(value, str)
