"""SHRINE-style obfuscation: bins of 5, noise clamped, a '≤ N' low limit."""

import numpy as np
import pytest

from healthspace.privacy.obfuscate import Obfuscation, is_low, obfuscate_count


def test_values_are_binned_and_within_the_clamp():
    rng = np.random.default_rng(1)
    cfg = Obfuscation(sigma=50.0, clamp=10.0)  # huge σ: the clamp must do the work
    out = [obfuscate_count(500, cfg, rng) for _ in range(2000)]
    assert all(v % 5 == 0 for v in out)
    assert min(out) >= 490 and max(out) <= 510  # 500 ± 10, rounded to the nearest 5
    assert {490, 510} <= set(out)


def test_default_noise_is_small_and_centred():
    out = np.array([obfuscate_count(1000) for _ in range(3000)])
    assert set(np.unique(out)) <= {990, 995, 1000, 1005, 1010}
    assert abs(out.mean() - 1000) < 0.5


def test_low_limit_label():
    assert all(obfuscate_count(3) == "≤ 10" for _ in range(200))
    assert is_low(obfuscate_count(0)) and not is_low(obfuscate_count(100))
    assert obfuscate_count(12, Obfuscation(low_limit=20, clamp=0)) == "≤ 20"
    assert obfuscate_count(30, Obfuscation(clamp=0)) == 30


def test_bad_config():
    with pytest.raises(ValueError):
        Obfuscation(sigma=0)
