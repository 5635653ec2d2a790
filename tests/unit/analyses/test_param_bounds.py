"""Consumer parameters are bounded: an oversized model or summary is refused at once."""

from __future__ import annotations

import time

import pytest

from healthspace.analyses import registry
from healthspace.core.errors import InvalidInput


def test_a_glm_formula_of_thousands_of_terms_is_refused_quickly() -> None:
    glm = registry.get("glm")
    formula = "y ~ " + " + ".join(f"x{i}" for i in range(2000))
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="more than 200 terms") as refused:
        glm.parse_params({"formula": formula, "family": "binomial"})
    assert refused.value.field == "params.formula"
    assert time.perf_counter() - started < 1.0  # refused before the formula is parsed
    assert glm.parse_params({"formula": "y ~ " + " + ".join(f"x{i}" for i in range(150))})


def test_a_summary_of_a_hundred_thousand_variables_is_refused() -> None:
    summary = registry.get("summary")
    with pytest.raises(InvalidInput) as refused:
        summary.parse_params({"variables": [f"v{i}" for i in range(100_000)]})
    assert refused.value.field == "params.variables"
    assert summary.parse_params({"variables": ["age", "sex"]})
