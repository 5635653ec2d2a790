"""Privacy mechanisms over the real hub and node processes: DP counts within an ε budget."""

from __future__ import annotations

import pytest

from healthspace.demo_data import showcase_cohort

from .reference import t2d_feasibility

pytestmark = pytest.mark.xdist_group("federation")


def test_dp_counts_spend_the_node_budget_and_are_refused_beyond_it(live):
    exact = t2d_feasibility(live.data / "hospital_2")
    spec = {"analysis": "cohort_count", "cohort": showcase_cohort(), "nodes": ["dp_site"],
            "params": {"dp_epsilon": 1.5, "breakdown": True}}
    with live.consumer() as client:
        view = client.wait(client.submit(spec).id, timeout=120)
        assert view.status.value == "completed", view.error
        result = view.result
        assert result["dp"] is True and result["epsilon"]["study"] == 1.5
        noisy, half = result["sites"]["dp_site"], result["intervals"]["dp_site"]
        assert isinstance(noisy, int) and half > 0
        assert abs(noisy - exact) <= 4 * half  # 95 % interval; 4× makes a flake ~impossible
        cells = result["breakdown"]["dp_site"]
        assert all(isinstance(c["count"], int) for c in cells)  # noised, never "<k"
        # 1.5 of 2.0 spent: another ε = 1 is refused, naming what remains.
        again = client.wait(client.submit({**spec, "params": {"dp_epsilon": 1.0}}).id,
                            timeout=120)
    assert again.status.value in ("failed", "partial", "rejected")
    error = " ".join(t.error or "" for t in again.tasks)
    assert "0.5" in error and "remain" in error
