"""End to end: real hub and node processes on loopback, real HTTP, real stores."""

from __future__ import annotations

import json
import time

import duckdb
import httpx
import pytest

from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.demo_data import showcase_cohort

from .conftest import HOSPITALS, OPEN_POLICY
from .helpers import cli
from .reference import persons_with_concept, released, t2d_feasibility

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]




def test_feasibility_count_equals_pooled_sql(live):
    with live.consumer() as c:
        view = c.submit({"analysis": "cohort_count", "cohort": showcase_cohort(),
                         "purpose": "drug_development"})
        assert sorted(view.nodes) == HOSPITALS  # default: hospitals holding data, no payer
        view = c.wait(view.id, timeout=120)
    assert view.status == StudyStatus.COMPLETED, view.error
    expected = {h: t2d_feasibility(live.data / h) for h in HOSPITALS}
    assert all(n >= 10 for n in expected.values()), expected
    assert view.result["sites"] == {h: released(n) for h, n in expected.items()}
    assert view.result["total"] == sum(expected.values())
    assert view.result["total_is_lower_bound"] is False
    for site, cells in view.result["breakdown"].items():
        numbers = [c["count"] for c in cells if isinstance(c["count"], int)]
        assert sum(numbers) <= expected[site]
        assert all(n >= 10 for n in numbers)
        assert len([c for c in cells if isinstance(c["count"], str)]) != 1


def test_eunomia_split_equals_pooled_sql(live):
    cohort = {"entry": {"condition": {"concepts": [192671]}}}
    names = [p.name for p in live.eunomia]
    with live.consumer() as c:
        view = c.wait(c.submit({"analysis": "cohort_count", "cohort": cohort,
                                "nodes": names}).id, timeout=120)
    assert view.status == StudyStatus.COMPLETED, view.error
    expected = {p.name: persons_with_concept(p, 192671) for p in live.eunomia}
    assert sum(expected.values()) == 479  # Eunomia's documented GI-bleeding persons
    assert view.result["sites"] == expected
    assert view.result["total"] == 479


def test_cli_results_json_matches_simulation(live, tmp_path):
    cohort_file = tmp_path / "cohort.json"
    cohort_file.write_text(json.dumps(showcase_cohort()))
    study_file = tmp_path / "study.yaml"
    study_file.write_text("analysis: cohort_count\npurpose: research\ncohort_path: cohort.json\n")
    submitted = json.loads(cli(live, "study", "submit", str(study_file), "--wait",
                               "--json").stdout)
    again = json.loads(cli(live, "study", "results", str(submitted["study_id"]),
                           "--json").stdout)
    assert again == submitted
    sites = [f"--site={h}={live.data / h}" for h in HOSPITALS]
    simulated = json.loads(cli(live, "sim", "count", *sites, "--cohort", str(cohort_file),
                               "--json").stdout)
    assert {k: v for k, v in again.items() if k in simulated} == simulated
    assert again["nodes"] == dict.fromkeys(HOSPITALS, "completed")
    assert again["status"] == "completed"


def test_small_counts_are_suppressed_on_the_node(live):
    cohort = {"entry": {"condition": {"codes": ["ICD10:C34%"]}},
              "inclusion": [{"age": {"min": 18, "max": 30}}]}
    with live.consumer() as c:
        view = c.wait(c.submit({"analysis": "cohort_count", "cohort": cohort}).id, timeout=120)
    expected_site = {h: released(_count_c34_young(live.data / h)) for h in HOSPITALS}
    assert view.result["sites"] == expected_site
    assert any(isinstance(v, str) for v in expected_site.values())
    assert view.result["total_is_lower_bound"] is True
    assert view.result["total"] == sum(v for v in expected_site.values() if isinstance(v, int))


def _count_c34_young(site):
    return int(duckdb.connect().execute(f"""
      WITH c AS (SELECT concept_id FROM read_csv_auto('{site}/concept.csv')
                 WHERE vocabulary_id = 'ICD10' AND concept_code LIKE 'C34%'),
      f AS (SELECT person_id, min(condition_start_date) d
            FROM read_csv_auto('{site}/condition_occurrence.csv')
            WHERE condition_concept_id IN (SELECT * FROM c) GROUP BY 1)
      SELECT count(*) FROM f JOIN read_csv_auto('{site}/person.csv') p USING (person_id)
      WHERE year(f.d) - p.year_of_birth BETWEEN 18 AND 30""").fetchone()[0])


def test_catalog_publishes_rounded_counts_and_codes_only(live):
    with live.consumer() as c:
        nodes = {n.name: n for n in c.list_nodes()}
    h1 = nodes["hospital_1"].catalog
    assert h1.tables["person"] % 100 == 0 and abs(h1.tables["person"] - 4000) <= 100
    assert "E11.9" in h1.vocabularies["ICD10"]
    assert "4548-4" in h1.vocabularies["LOINC"]
    assert "measurement" not in nodes["payer"].catalog.tables
    assert nodes["hospital_1"].public_key and len(nodes["hospital_1"].public_key) == 64
    # The data-quality summary: scores and rates only, the same as the node's own report.
    quality = h1.quality
    assert quality["score"] == 1.0 and quality["failed"] == 0 and quality["failed_checks"] == []
    assert set(quality["rates"]) >= {"age_0_120", "visits_in_observation", "orphans_death"}
    assert all(isinstance(v, float) for v in quality["rates"].values())
    eunomia = nodes[live.eunomia[0].name].catalog.quality
    assert "orphans_observation_period" in eunomia["failed_checks"]


def test_every_api_route_needs_a_token_over_real_http(live):
    spec = httpx.get(f"{live.url}/openapi.json", timeout=10).json()
    for path, methods in spec["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        url = live.url + path.replace("{study_id}", "1").replace("{task_id}", "1")
        for method in methods:
            r = httpx.request(method.upper(), url, timeout=10)
            assert r.status_code == 401, (method, path, r.status_code)


def test_bad_study_gets_422_naming_the_field_over_http(live):
    bad = {"analysis": "cohort_count",
           "cohort": {"entry": {"condition": {"codes": ["ICD10:E11%"]}},
                      "inclusion": [{"age": {"min": 40, "maxx": 75}}]}}
    r = httpx.post(f"{live.url}/api/v1/studies", json=bad, timeout=10,
                   headers={"Authorization": f"Bearer {live.consumer_token}"})
    assert r.status_code == 422
    assert "inclusion[0]" in r.json()["detail"]["field"]
    proc = cli(live, "study", "status", "999999", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_failing_node_is_reported_and_others_complete(live):
    fed = live.fed
    broken = fed.workdir / "nodes" / "broken.duckdb"
    src = fed.nodes["hospital_2"].store
    broken.write_bytes(src.read_bytes())
    con = duckdb.connect(str(broken))
    # The catalog still builds, but any query reading lab values fails at run time.
    con.execute("ALTER TABLE measurement RENAME TO measurement_raw")
    con.execute("CREATE VIEW measurement AS SELECT * EXCLUDE (value_as_number), "
                "CAST(measurement_source_value AS DOUBLE) AS value_as_number "
                "FROM measurement_raw")
    con.close()
    fed.ensure_org("broken_lab", "data_centre")
    fed.add_node("broken_site", "broken_lab", broken, policy=OPEN_POLICY)
    fed.wait_nodes_ready()
    with live.consumer() as c:
        view = c.wait(c.submit({"analysis": "cohort_count", "cohort": showcase_cohort(),
                                "nodes": ["hospital_1", "broken_site"]}).id, timeout=120)
    fed.stop_node("broken_site")
    assert view.status == StudyStatus.PARTIAL
    statuses = {t.node: t.status for t in view.tasks}
    assert statuses == {"hospital_1": TaskStatus.COMPLETED, "broken_site": TaskStatus.FAILED}
    assert view.result["sites"] == {"hospital_1": released(t2d_feasibility(live.data /
                                                                           "hospital_1"))}
    proc = cli(live, "study", "results", str(view.id), "--json", check=False)
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["nodes"]["broken_site"] == "failed"


def test_hub_restart_mid_study_still_completes(live):
    fed = live.fed
    process = fed.nodes["hospital_3"].process
    fed.stop_node("hospital_3")
    # SIGTERM stops a node as Ctrl-C does: at once, cleanly, exit status 0.
    assert process is not None and process.returncode == 0
    assert fed.log_tail("node-hospital_3.log", 3).rstrip().endswith("stopped")
    # A long-poll the killed node had open may still be pending at the hub (it notices the
    # closed connection only when it answers); let it run out so no task is claimed for a
    # node that is gone.
    try:
        time.sleep(fed.poll_wait + 1)
        with live.consumer() as c:
            view = c.submit({"analysis": "cohort_count", "cohort": showcase_cohort(),
                             "nodes": ["hospital_1", "hospital_3"]})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                tasks = {t.node: t.status for t in c.study(view.id).tasks}
                if tasks["hospital_1"] == TaskStatus.COMPLETED:
                    break
                time.sleep(0.05)
            assert tasks == {"hospital_1": TaskStatus.COMPLETED,
                             "hospital_3": TaskStatus.QUEUED}
        fed.restart_hub()
    finally:  # the later tests need hospital_3 back, whatever happened here
        fed.start_node("hospital_3")
    with live.consumer() as c:
        final = c.wait(view.id, timeout=120)
    assert final.status == StudyStatus.COMPLETED
    assert {t.node: t.attempts for t in final.tasks} == {"hospital_1": 1, "hospital_3": 1}
    expected = {h: released(t2d_feasibility(live.data / h)) for h in ("hospital_1", "hospital_3")}
    assert final.result["sites"] == expected
    # The nodes that were long-polling through the restart keep working.
    with live.consumer() as c:
        after = c.wait(c.submit({"analysis": "cohort_count", "cohort": showcase_cohort(),
                                 "nodes": ["hospital_1", "hospital_2"]}).id, timeout=120)
    assert after.status == StudyStatus.COMPLETED
