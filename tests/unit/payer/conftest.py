"""The synthetic hospitals' inpatient cases, grouped in-process and pooled: the reference."""

from __future__ import annotations

import pandas as pd
import pytest

from healthspace.payer.cases import grouped_cases
from healthspace.payer.rules import load_rules
from healthspace.sim import load_site

SITES = ["hospital_1", "hospital_2", "hospital_3"]


@pytest.fixture(scope="module")
def pooled(synth_dir) -> pd.DataFrame:
    """Every hospital's grouped cases with a ``site`` column."""
    frames = []
    for name in SITES:
        site = load_site(synth_dir / name)
        try:
            frames.append(grouped_cases(site.con, load_rules()).assign(site=name))
        finally:
            site.con.close()
    return pd.concat(frames, ignore_index=True)
