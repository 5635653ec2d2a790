"""benchmarks/province.py: the extrapolation arithmetic, the tiled store, a tiny-store run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import province  # noqa: E402
from data_factory import build_large_store  # noqa: E402

from healthspace.cdm.schema import TABLES  # noqa: E402
from healthspace.cohort.compiler import compile_cohort  # noqa: E402
from healthspace.cohort.models import load_cohort  # noqa: E402
from healthspace.demo_data import showcase_cohort  # noqa: E402

COHORT_TABLES = ("person", "condition_occurrence", "measurement", "drug_exposure", "concept")


def rows(store: Path) -> dict[str, int]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
    finally:
        con.close()


def cohort_size(store: Path) -> int:
    compiled = compile_cohort(load_cohort(showcase_cohort()))
    con = duckdb.connect(str(store), read_only=True)
    try:
        return int(con.execute(f"SELECT count(*) FROM ({compiled.sql})",
                               compiled.params).fetchone()[0])
    finally:
        con.close()


def test_extrapolation_arithmetic():
    a = province.Assumptions(records=1.11e9, institutions=111, largest_share=0.1,
                             cores_per_node=10, scan_fraction=0.5, rtt_s=0.01, round_trips=3,
                             measured_nodes=100)
    p = province.extrapolate(1e7, 0.5, a)
    assert p.mean_records == pytest.approx(1e7)
    assert p.largest_records == pytest.approx(1.11e8)
    assert p.node_mean_s == pytest.approx(1e7 * 0.5 / 1e8)  # 0.05 s
    assert p.node_largest_s == pytest.approx(1.11e8 * 0.5 / 1e8)  # 0.555 s
    assert p.coordination_s == pytest.approx(0.5 * 111 / 100)
    assert p.network_s == pytest.approx(0.03)
    assert p.end_to_end_s == pytest.approx(0.555 + 0.555 + 0.03)
    assert p.end_to_end_mean_s == pytest.approx(0.05 + 0.555 + 0.03)
    three = province.extrapolate(1e7, 0.5, a, rounds=3, records_per_round=1.0)
    assert three.node_largest_s == pytest.approx(1.11)
    assert three.end_to_end_s == pytest.approx(3 * (1.11 + 0.555 + 0.03))
    with pytest.raises(ValueError):
        province.extrapolate(0, 0.5, a)


def test_tiled_store_is_copies_of_its_tile(tmp_path):
    large = build_large_store(tmp_path / "big.duckdb", 3_000, tile_persons=1_500)
    assert (large.copies, large.tile_persons) == (2, 1_500)
    tile, big = rows(large.tile), rows(large.path)
    assert big == large.rows
    for table, n in tile.items():
        shared = table in ("concept", "concept_ancestor", "care_site", "location")
        assert big[table] == (n if shared else 2 * n), table
    assert cohort_size(large.path) == 2 * cohort_size(large.tile)
    con = duckdb.connect(str(large.path), read_only=True)
    distinct = con.execute("SELECT count(DISTINCT person_id), count(DISTINCT "
                           "person_source_value) FROM person").fetchone()
    orphans = con.execute("SELECT count(*) FROM drug_exposure d ANTI JOIN person p "
                          "USING (person_id)").fetchone()[0]
    con.close()
    assert distinct == (3_000, 3_000) and orphans == 0
    again = build_large_store(tmp_path / "big.duckdb", 3_000, tile_persons=1_500)
    assert again.build_s == large.build_s  # reused, not rebuilt


@pytest.mark.slow
def test_province_on_a_tiny_store(tmp_path, capsys):
    province.main(["--persons", "20000", "--cache", str(tmp_path), "--coordination-s", "0.4",
                   "--repeats", "1", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(result)[:3] == ["records_per_s_per_core", "coordination_s_at_100_nodes",
                                "extrapolated_cohort_count_s"]
    store = tmp_path / "province-20000.duckdb"
    counts = rows(store)
    assert result["persons"] == counts["person"] == 20_000
    assert result["store_rows"] == sum(counts.values())
    # Records scanned: the full row count of every table the cohort count reads.
    assert result["count_records_scanned"] == sum(counts[t] for t in COHORT_TABLES)
    assert result["cohort_persons"] == cohort_size(store)
    assert result["records_per_s_per_core"] == pytest.approx(
        result["count_records_scanned"] / result["count_s"] / result["threads"], rel=0.01)
    assert result["coordination_s_at_100_nodes"] == 0.4
    a = province.Assumptions(**result["assumptions"])
    expected = province.extrapolate(result["count_records_scanned"] / result["count_s"]
                                    / result["threads"], 0.4, a)
    assert result["extrapolated_cohort_count_s"] == pytest.approx(expected.end_to_end_s,
                                                                  rel=0.01)
    assert result["glm_converged"] is True and result["glm_rounds"] >= 3
    assert result["glm_records_scanned"] > 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two cores")
def test_pinning_puts_the_hub_on_a_core_of_its_own_with_every_thread(tmp_path):
    """The coordination measurement's pinning: every thread of the hub process on the first
    core, every thread of the others on the rest (threads keep their own affinity)."""
    from load import pin

    script = "import threading, time\nthreading.Thread(target=time.sleep, args=(30,)).start()\n"
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    try:
        for p in procs:  # both threads started
            deadline = time.monotonic() + 10
            while len(os.listdir(f"/proc/{p.pid}/task")) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        pin(procs[0].pid, [procs[1].pid])
        cores = sorted(os.sched_getaffinity(0))

        def affinities(pid: int) -> set[frozenset[int]]:
            tasks = os.listdir(f"/proc/{pid}/task")
            return {frozenset(os.sched_getaffinity(int(t))) for t in tasks}

        assert affinities(procs[0].pid) == {frozenset(cores[:1])}
        assert affinities(procs[1].pid) == {frozenset(cores[1:])}
    finally:
        for p in procs:
            p.kill()
            p.wait()
