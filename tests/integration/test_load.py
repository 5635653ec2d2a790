"""The load machinery, small: light node agents and concurrent consumers against a real hub.

The heavy run (100 agents, 50 consumers) is ``benchmarks/load.py``; here 20 agents and 10
consumers prove the machinery itself: every study completes with each node's count equal to
plain DuckDB SQL over that node's store, no request fails, and the latency figures are sane.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import duckdb
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from agents import TERMINAL, percentiles  # noqa: E402
from load import LoadConfig, run_load  # noqa: E402

from healthspace.cohort.compiler import compile_cohort  # noqa: E402
from healthspace.cohort.models import load_cohort  # noqa: E402
from healthspace.demo_data import showcase_cohort  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("load")]


def sql_count(store: str) -> int:
    """The showcase cohort's size at one store, by DuckDB SQL alone."""
    compiled = compile_cohort(load_cohort(showcase_cohort()))
    con = duckdb.connect(store, read_only=True)
    try:
        return int(con.execute(f"SELECT count(*) FROM ({compiled.sql})",
                               compiled.params).fetchone()[0])
    finally:
        con.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    config = LoadConfig(nodes=20, consumers=10, studies=2, think_s=0.2, targets=5, stores=4,
                        persons=400, agent_procs=2, poll_wait=10.0, timeout_s=240.0)
    return run_load(config, tmp_path_factory.mktemp("load"))


def test_every_study_completes_with_the_sql_counts(report):
    assert len(report.studies) == 10 * 2
    expected = {node: sql_count(store) for node, store in report.node_stores.items()}
    assert min(expected.values()) >= 10  # every count is released, none suppressed
    for study in report.studies:
        assert study.status == "completed", study
        assert len(study.nodes) == 5
        assert study.result["sites"] == {n: expected[n] for n in study.nodes}
        assert study.result["total"] == sum(expected[n] for n in study.nodes)
    assert report.problems == []


def test_every_task_ran_once_on_its_node(report):
    ids = {s.study_id for s in report.studies}
    assert len(report.tasks) == 20 * 5
    assert {t.study_id for t in report.tasks} == ids
    assert len({(t.study_id, t.node) for t in report.tasks}) == len(report.tasks)
    nodes_of = {s.study_id: set(s.nodes) for s in report.studies}
    for task in report.tasks:
        assert task.node in nodes_of[task.study_id]
        assert task.status == "completed"
        assert task.records_scanned > 0
        assert task.received <= task.posted <= task.acked


def test_no_request_failed(report):
    for tally in (report.consumer_http, report.agent_http):
        assert tally.server_errors == 0, tally.statuses
        assert tally.client_errors == 0, tally.statuses
        assert tally.transport_errors == 0
    assert report.agent_http.statuses[200] >= 2 * len(report.tasks)  # task + result


def test_latency_figures(report):
    summary = report.summary()
    added = report.added
    assert len(added) == len(report.studies)
    for study, value in zip(report.studies, added, strict=True):
        assert study.status in TERMINAL
        assert 0 < value <= study.e2e_s
    assert 0 < summary["p50_s"] <= summary["p95_s"] <= summary["p99_s"] <= max(added)
    assert summary["nodes"] == 20 and summary["consumers"] == 10
    assert summary["hub_cpu_pct"] > 0
    assert summary["hub_cpu_ms_per_task"] == pytest.approx(
        1000 * report.hub_cpu_s / len(report.tasks), abs=0.01) and report.hub_cpu_s > 0
    assert summary["offered_studies_per_s"] == pytest.approx(10 / 0.2)
    assert summary["server_errors"] == 0 and summary["wrong_results"] == 0


def test_percentiles():
    values = [float(v) for v in range(1, 101)]
    cut = percentiles(values)
    assert cut["p50_s"] == pytest.approx(50.5)
    assert cut["p95_s"] == pytest.approx(95.05)
    assert cut["p99_s"] == pytest.approx(99.01)
    assert percentiles([2.0]) == {"p50_s": 2.0, "p95_s": 2.0, "p99_s": 2.0}
    assert all(math.isnan(v) for v in percentiles([]).values())

