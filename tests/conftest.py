"""Shared fixtures: small synthetic hospitals and the Eunomia GiBleed sample split in three."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

# The shared data folder sits beside the checkout (as in CI); HEALTHSPACE_SHARED_DATA overrides.
SHARED = Path(
    os.environ.get("HEALTHSPACE_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
EUNOMIA = SHARED / "eunomia_gibleed"


def require_eunomia() -> Path:
    """The Eunomia folder; missing data fails under CI and skips on a developer's machine."""
    if not EUNOMIA.exists():
        message = f"Eunomia sample not found at {EUNOMIA} (set HEALTHSPACE_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return EUNOMIA

PERSON_TABLES = [
    "person", "observation_period", "visit_occurrence", "condition_occurrence",
    "drug_exposure", "procedure_occurrence", "measurement", "death", "observation",
]
SHARED_TABLES = ["concept", "concept_ancestor"]


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Three small synthetic hospitals plus the payer (deterministic)."""
    from healthspace.cdm.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, sites=3, persons=4_000, seed=7, payer=True)
    return out


def split_eunomia(out: Path, parts: int = 3) -> list[Path]:
    """Write Eunomia split into ``parts`` sites by ``person_id % parts`` (vocabulary copied)."""
    require_eunomia()
    con = duckdb.connect()
    dirs = []
    for i in range(parts):
        site = out / f"eunomia_{i}"
        site.mkdir(parents=True, exist_ok=True)
        for table in PERSON_TABLES:
            src = (EUNOMIA / f"{table}.csv").as_posix()
            con.execute(
                f"COPY (SELECT * FROM read_csv('{src}', all_varchar = true) "
                f"WHERE CAST(person_id AS BIGINT) % {parts} = {i}) "
                f"TO '{(site / f'{table}.csv').as_posix()}' (HEADER)"
            )
        for table in SHARED_TABLES:
            (site / f"{table}.csv").write_bytes((EUNOMIA / f"{table}.csv").read_bytes())
        dirs.append(site)
    con.close()
    return dirs


@pytest.fixture(scope="session")
def eunomia_sites(tmp_path_factory) -> list[Path]:
    return split_eunomia(tmp_path_factory.mktemp("eunomia"))
