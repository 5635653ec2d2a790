"""Specialty-disease registries end to end: registered at the hub, materialised by the real node
agents, shown in the catalogue, targeted by name with the same answer as the inline study,
refreshed after a re-ingest, and bad input refused naming the field."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from healthspace.cdm.ingest import ingest_dir
from healthspace.cli.registry import load_registry_file
from healthspace.core.enums import StudyStatus, TaskStatus
from healthspace.core.errors import InvalidInput
from healthspace.core.registry_defs import RegistryView

from .conftest import HOSPITALS, OPEN_POLICY
from .helpers import cli
from .reference import released

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "healthspace" / "examples" / "registries"
PERSON_TABLES = ("person", "observation_period", "visit_occurrence", "condition_occurrence",
                 "drug_exposure", "procedure_occurrence", "measurement", "death", "identity")
# The registries' cohorts in plain SQL, independent of the cohort compiler: the first E11 /
# C34 code, adult at it (docs/cohorts.md: year of index minus year of birth), inside an
# observation period.
REFERENCE = """
WITH first AS (
  SELECT person_id, MIN(condition_start_date) AS d FROM condition_occurrence
  WHERE condition_source_value LIKE ? GROUP BY person_id)
SELECT f.person_id FROM first f JOIN person p ON p.person_id = f.person_id
WHERE YEAR(f.d) - p.year_of_birth >= 18 AND EXISTS (
  SELECT 1 FROM observation_period o WHERE o.person_id = f.person_id
  AND o.observation_period_start_date <= f.d AND o.observation_period_end_date >= f.d)
ORDER BY f.person_id"""
PREFIX = {"t2d_complications": "E11%", "lung_cancer_lines": "C34%"}
WAIT_S = 150.0  # an agent asks for its registries every 30 s, between long-polls of 10 s


def cohort_members(store: Path, registry: str) -> list[int]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return [int(r[0]) for r in con.execute(REFERENCE, [PREFIX[registry]]).fetchall()]
    finally:
        con.close()


def rounded(n: int, k: int = 10) -> int | str:
    value = released(n, k)
    return value if isinstance(value, str) else int(round(n / 10) * 10)


def node_log(live, node: str) -> str:
    """The node's log as one line of words (the console handler wraps long messages)."""
    return " ".join((live.fed.workdir / "logs" / f"node-{node}.log").read_text().split())


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def current_everywhere(live, name: str, nodes: list[str]) -> Callable[[], RegistryView | None]:
    def check() -> RegistryView | None:
        with live.consumer() as c:
            view = c.registry(name)
        errors = {n: s.error for n, s in view.status.items() if s.error}
        assert not errors, errors
        ok = all(view.status[n].current and view.status[n].size is not None for n in nodes)
        return view if ok else None

    return check


@pytest.fixture(scope="module")
def registered(live) -> dict[str, RegistryView]:
    views = {}
    with live.fed.operator() as op:
        for name in PREFIX:
            views[name] = op.create_registry(load_registry_file(EXAMPLES / f"{name}.yaml"))
    return {name: wait_for(f"{name} on every hospital",
                           current_everywhere(live, name, HOSPITALS)) for name in views}


def test_every_hospital_materialises_both_and_the_catalog_shows_sizes(live, registered):
    for name, view in registered.items():
        assert view.participants == HOSPITALS and view.version == 1
        for hospital in HOSPITALS:
            members = cohort_members(live.fed.nodes[hospital].store, name)
            assert len(members) >= 10, (name, hospital)
            assert view.status[hospital].size == rounded(len(members)), (name, hospital)
            assert view.status[hospital].refreshed_at is not None
    proc = cli(live, "registry", "list")
    assert "t2d_complications" in proc.stdout and "lung_cancer_lines" in proc.stdout
    listed = json.loads(cli(live, "registry", "list", "--json").stdout)
    assert [r["name"] for r in listed] == ["lung_cancer_lines", "t2d_complications"]
    shown = json.loads(cli(live, "registry", "show", "lung_cancer_lines", "--json").stdout)
    assert shown["status"]["hospital_1"]["size"] == registered["lung_cancer_lines"].status[
        "hospital_1"].size
    # The node keeps them beside its store, outside the read-only CDM store.
    store = live.fed.nodes["hospital_2"].store
    local = json.loads(cli(live, "node", "registry", "list", "--store", str(store),
                           "--json").stdout)
    assert {m["name"]: m["persons"] for m in local} == {
        name: len(cohort_members(store, name)) for name in PREFIX}
    assert all(m["fresh"] for m in local)


STUDIES = [
    ("t2d_complications", "summary",
     {"variables": ["age", "hba1c", "egfr", "days"], "categorical": ["first_line", "ckd"]}),
    ("t2d_complications", "glm", {"formula": "kidney_complication ~ age + male + ckd + statin",
                                  "family": "binomial"}),
    ("lung_cancer_lines", "km", {"duration": "days", "event": "death"}),
    ("lung_cancer_lines", "cohort_count", {"breakdown": True}),
]


@pytest.mark.parametrize(("name", "analysis", "params"), STUDIES)
def test_a_study_by_registry_name_equals_the_inline_study(live, registered, name, analysis,
                                                          params):
    view = registered[name]
    inline: dict[str, Any] = {"analysis": analysis, "params": params, "cohort": view.cohort,
                              "nodes": HOSPITALS}
    if analysis != "cohort_count":
        inline["dataset"] = view.dataset
    with live.consumer() as c:
        by_name = c.wait(c.submit({"analysis": analysis, "params": params,
                                   "registry": name}).id, timeout=180)
        direct = c.wait(c.submit(inline).id, timeout=180)
    assert by_name.status == direct.status == StudyStatus.COMPLETED, (by_name.error,
                                                                      direct.error)
    assert by_name.registry is not None and by_name.registry.name == name
    assert (by_name.registry.version, by_name.registry.digest) == (1, view.digest)
    assert by_name.nodes == HOSPITALS and by_name.cohort == view.cohort
    assert by_name.result == direct.result
    for hospital in HOSPITALS:  # the nodes read the registry's rows, not the compiled SQL
        assert f"rows from registry {name} v1" in node_log(live, hospital)


def test_consent_still_applies_to_registry_rows(live, registered, tmp_path):
    node = live.fed.nodes["hospital_1"]
    members = cohort_members(node.store, "lung_cancer_lines")[:11]
    con = duckdb.connect(str(node.store), read_only=True)
    psvs = [r[0] for r in con.execute(
        f"SELECT person_source_value FROM person WHERE person_id IN "
        f"({', '.join(map(str, members))})").fetchall()]
    con.close()
    study = {"analysis": "cohort_count", "registry": "lung_cancer_lines",
             "nodes": ["hospital_1"]}
    with live.consumer() as c:
        before = c.wait(c.submit(study).id, timeout=60).result["sites"]["hospital_1"]
    consent = tmp_path / "consent.csv"
    consent.write_text("person_source_value,tier\n" + "".join(f"{p},withheld\n" for p in psvs))
    cli(live, "node", "consent", "import", str(consent), "--store", str(node.store))
    try:
        with live.consumer() as c:
            after = c.wait(c.submit(study).id, timeout=60)
        assert after.result["sites"]["hospital_1"] == before - 11  # the next computation
    finally:
        consent.write_text("person_source_value,tier\n" + "".join(f"{p},open\n" for p in psvs))
        cli(live, "node", "consent", "import", str(consent), "--store", str(node.store))


def _half(source: Path, out: Path) -> Path:
    """A synthetic site's CSVs with every other person only."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for path in source.glob("*.csv"):
        if path.stem in PERSON_TABLES:
            con.execute(f"COPY (SELECT * FROM read_csv('{path.as_posix()}', all_varchar = true) "
                        f"WHERE CAST(person_id AS BIGINT) % 2 = 1) TO "
                        f"'{(out / path.name).as_posix()}' (HEADER)")
        else:
            (out / path.name).write_bytes(path.read_bytes())
    con.close()
    return out


def test_refresh_picks_up_newly_ingested_patients(live, registered, tmp_path):
    """A node of its own (outside the hospitals' defaults), first with half of a site's
    persons; after the rest are ingested the agent refreshes on its own, and the CLI can
    refresh at once."""
    fed = live.fed
    store = fed.workdir / "nodes" / "growing_site.duckdb"
    ingest_dir(store, _half(live.data / "hospital_1", tmp_path / "half"))
    fed.ensure_org("registry_lab", "data_centre")
    node = fed.add_node("growing_site", "registry_lab", store, policy=OPEN_POLICY)
    fed.wait_nodes_ready()
    try:
        spec = load_registry_file(EXAMPLES / "t2d_complications.yaml")
        spec = spec.model_copy(update={"name": "t2d_growing", "nodes": ["growing_site"]})
        with fed.operator() as op:
            op.create_registry(spec)
        first = wait_for("the first materialisation",
                         current_everywhere(live, "t2d_growing", ["growing_site"]))
        before = len(cohort_members(store, "t2d_complications"))
        assert first.status["growing_site"].size == rounded(before)
        ingest_dir(store, live.data / "hospital_1")  # the other half arrives
        after = len(cohort_members(store, "t2d_complications"))
        assert after > before + 10

        def grown() -> RegistryView | None:
            view = current_everywhere(live, "t2d_growing", ["growing_site"])()
            return view if view and view.status["growing_site"].size != first.status[
                "growing_site"].size else None

        view = wait_for("the refresh after the re-ingest", grown)
        assert view.status["growing_site"].size == rounded(after)
        local = json.loads(cli(live, "node", "registry", "list", "--store", str(store),
                               "--json").stdout)
        assert [m["persons"] for m in local] == [after]  # exactly the new persons more
        refreshed = view.status["growing_site"].refreshed_at
        proc = cli(live, "node", "registry", "refresh", "--store", str(store), "--name",
                   "t2d_growing", token=node.token)
        assert f"{after:,} persons" in proc.stdout
        with live.consumer() as c:
            again = c.registry("t2d_growing").status["growing_site"]
        assert again.refreshed_at is not None and refreshed is not None
        assert again.refreshed_at > refreshed and again.size == rounded(after)
        assert "refreshed (the store was re-ingested)" in node_log(live, "growing_site")
    finally:
        fed.stop_node("growing_site")


def test_bad_registry_input_names_the_field(live, registered, tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("analysis: cohort_count\nregistry: no_such_registry\n")
    proc = cli(live, "study", "submit", str(bad), check=False)
    assert proc.returncode == 2 and "registry" in proc.stderr and "unknown" in proc.stderr
    bad.write_text("analysis: cohort_count\nregistry: t2d_complications\n"
                   "cohort: {entry: {condition: {codes: ['ICD10:E11%']}}}\n")
    proc = cli(live, "study", "submit", str(bad), check=False)
    assert proc.returncode == 2 and "registry: give either a registry" in proc.stderr
    registry = tmp_path / "registry.yaml"
    registry.write_text((EXAMPLES / "lung_cancer_lines.yaml").read_text().replace(
        "type: age}", "type: height}", 1))
    proc = cli(live, "registry", "create", str(registry), token=live.fed.operator_token,
               check=False)
    assert proc.returncode == 2 and "dataset.covariates[0].type" in proc.stderr
    with pytest.raises(InvalidInput) as raised, live.fed.operator() as op:
        op.create_registry({"name": "bad", "title": "x", "cohort": {"entry": {}},
                            "dataset": {"covariates": [{"name": "age", "type": "age"}]}})
    assert raised.value.field == "cohort.entry"
    with live.consumer() as c:
        view = c.wait(c.submit({"analysis": "cohort_count", "registry": "lung_cancer_lines",
                                "nodes": ["hospital_2"]}).id, timeout=60)
    assert view.status == StudyStatus.COMPLETED
    assert [t.status for t in view.tasks] == [TaskStatus.COMPLETED]
