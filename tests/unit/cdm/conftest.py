"""DuckDB node stores the engine tests compare other engines against (one per test module)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import require_eunomia

from healthspace.cdm.ingest import ingest_dir


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic hospital (2,500 persons) ingested into a DuckDB store."""
    from healthspace.cdm.synth import generate

    out = tmp_path_factory.mktemp("synth_store")
    generate(out, sites=1, persons=2_500, seed=11)
    store = out / "node.duckdb"
    ingest_dir(store, out / "hospital_1")
    return store


@pytest.fixture(scope="module")
def eunomia_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eunomia GiBleed ingested into a DuckDB store (skips when the sample is absent)."""
    store = tmp_path_factory.mktemp("eunomia_store") / "node.duckdb"
    ingest_dir(store, require_eunomia())
    return store
