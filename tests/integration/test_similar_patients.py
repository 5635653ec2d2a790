"""Similar-patient lookups through the real hub and node processes, against a brute force."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from tests.integration import reference_similar as ref
from tests.integration import test_registries as registries
from tests.integration.helpers import cli

registered = registries.registered  # the registries' module fixture, shared here
node_log = registries.node_log

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("federation")]

SITES = ["hospital_1", "hospital_2", "hospital_3"]
ENTRY = ["ICD10:E11%"]
COHORT = {"name": "T2D", "entry": {"condition": {"codes": ENTRY}}}
K = 40
PARAMS = {
    "profile": {"age": 63, "sex": "M", "conditions": ["ICD10:E11.9", "ICD10:I10"],
                "labs": {"LOINC:4548-4": 8.41937, "LOINC:33914-3": 58.0},
                "drugs": ["ATC:A10BA02"]},
    "k": K,
    "treatments": [{"name": "metformin", "codes": ["ATC:A10BA%"], "window_days": 365},
                   {"name": "statin", "codes": ["ATC:C10AA%"], "window_days": 365}],
    "outcomes": [{"name": "ckd", "codes": ["ICD10:N18%", "ICD10:E11.21", "ICD10:E11.22"],
                  "horizon_days": 730},
                 {"name": "death", "death": True, "horizon_days": 1825}],
}


@pytest.fixture(scope="module")
def reference_sites(live):
    return {name: ref.candidates(live.data / name, ENTRY, 365) for name in SITES}


def _lookup(live, params=PARAMS, nodes=SITES):
    client = live.consumer()
    study = client.submit({"analysis": "similar_patients", "purpose": "clinical_care",
                           "cohort": COHORT, "params": params, "nodes": nodes})
    view = client.wait(study.id, timeout=180)
    assert view.status == "completed", (view.status, view.error, view.tasks)
    return study.id, view.result


def _released(value, k=10):
    return value if isinstance(value, str) else (value if value >= k else f"<{k}")


def _expected_groups(pooled, params, k=10):
    """Per group: pooled treated, events per outcome and the coarsened KM input, applying the
    documented rules (a node's group below k is left out; its events below k are hidden)."""
    names = [t["name"] for t in params["treatments"]]
    out = {}
    for group in [*names, "none of the candidates", "all matched"]:
        treated, events, km_t, km_e = 0, {o["name"]: 0 for o in params["outcomes"]}, [], []
        hidden = {o["name"]: 0 for o in params["outcomes"]}
        for tally in pooled["tallies"].values():
            if group == "all matched":
                mask = np.ones(len(tally), dtype=bool)
            elif group == "none of the candidates":
                mask = ~tally[names].any(axis=1).to_numpy()
            else:
                mask = tally[group].to_numpy()
            if mask.sum() < k:
                continue
            treated += int(mask.sum())
            for o in params["outcomes"]:
                e = int(tally[f"{o['name']}_e"].to_numpy()[mask].sum())
                if e >= k:
                    events[o["name"]] += e
                else:
                    hidden[o["name"]] += 1
            km_t.append(ref.coarsened(tally["ckd_t"].to_numpy()[mask], k))
            km_e.append(tally["ckd_e"].to_numpy()[mask])
        out[group] = {"treated": treated, "events": events, "hidden": hidden,
                      "km": (np.concatenate(km_t), np.concatenate(km_e)) if km_t else None}
    return out


def test_lookup_equals_the_pooled_brute_force(live, reference_sites):
    study_id, result = _lookup(live)
    pooled = ref.lookup(reference_sites, PARAMS)
    for site in SITES:
        assert result["nodes"][site]["candidates"] == len(reference_sites[site]["people"])
        assert result["nodes"][site]["matched"] == K
    for feature, (mean, sd) in pooled["scale"].items():
        got = result["standardisation"][feature]
        assert got["mean"] == pytest.approx(mean, rel=1e-9)
        assert got["sd"] == pytest.approx(sd, rel=1e-9)
    distances = np.concatenate([c["distance"].to_numpy() for c in pooled["chosen"].values()])
    assert result["matched"] == len(distances) == 3 * K
    assert result["similarity"]["mean"] == pytest.approx(distances.mean(), rel=1e-9)
    assert result["similarity"]["sd"] == pytest.approx(distances.std(ddof=1), rel=1e-9)
    assert sum(result["similarity"]["counts"]) == 3 * K
    expected = _expected_groups(pooled, PARAMS)
    got = {g["name"]: g for g in result["groups"]}
    assert set(got) == set(expected)
    compared = 0
    for name, want in expected.items():
        group = got[name]
        if want["km"] is None:
            assert group["treated"] == "<10" and group["km"] is None
            continue
        assert group["treated"] == want["treated"], name
        for outcome, events in want["events"].items():
            entry = group["outcomes"][outcome]
            if want["hidden"][outcome]:
                assert entry["rate"] is None and entry["rate_range"][0] == pytest.approx(
                    events / want["treated"])
            else:
                assert entry["events"] == events
                assert entry["rate"] == pytest.approx(events / want["treated"])
                compared += 1
        times, flags = want["km"]
        kmf = KaplanMeierFitter().fit(times, flags)
        curve = group["km"]
        expected_s = kmf.survival_function_at_times(curve["timeline"]).to_numpy()
        np.testing.assert_allclose(curve["survival"], expected_s, rtol=1e-9, atol=1e-12)
        compared += 1
    assert compared >= 4, "the data must allow comparing several released numbers"


def test_no_record_level_value_leaves_a_node(live):
    study_id, result = _lookup(live)
    db = sqlite3.connect(live.fed.workdir / "hub.sqlite")
    rows = db.execute("SELECT body FROM envelopes WHERE study_id = ? AND kind = 'task.result'",
                      (study_id,)).fetchall()
    assert len(rows) == 2 * len(SITES)  # two rounds, every node
    for (body,) in rows:
        partial = json.loads(body)["payload"]["partial"]
        if "stats" in partial:
            assert set(partial) == {"candidates", "stats"}
            for stats in partial["stats"].values():
                assert stats is None or (set(stats) == {"n", "sum", "sumsq"}
                                         and stats["n"] >= 10)
            continue
        assert set(partial) == {"candidates", "matched", "min_cell_size", "similarity",
                                "groups"}
        assert partial["min_cell_size"] == 10
        assert partial["matched"] == K
        assert set(partial["similarity"]) == {"bins", "sum", "sumsq"}
        assert all(count >= 10 for _, _, count in partial["similarity"]["bins"])
        for group in partial["groups"]:
            assert set(group) <= {"name", "kind", "n", "outcomes", "km"}
            assert _released(group["n"]) == group["n"]
            if isinstance(group["n"], str):
                assert set(group) == {"name", "kind", "n"}
                continue
            for events in group["outcomes"].values():
                assert _released(events) == events
            km = group["km"]
            assert set(km) == {"n", "times", "d", "c", "coarsened"}
            from healthspace.core.encoding import decode_array
            d, c = decode_array(km["d"]), decode_array(km["c"])
            at_risk = km["n"] - np.concatenate([[0], np.cumsum(d + c)[:-1]])
            assert at_risk.min() >= 10  # every released time has a risk set of at least k
        text = json.dumps(partial)
        assert "person_id" not in text and "index_date" not in text


def test_a_lookup_reaches_only_its_nodes_and_is_kept_only_in_the_study(live):
    study_id, result = _lookup(live, nodes=SITES[:2])
    assert set(result["nodes"]) == set(SITES[:2])
    third = live.fed.nodes[SITES[2]]
    state = sqlite3.connect(third.store.with_suffix(".state.sqlite"))
    assert not state.execute("SELECT 1 FROM runs WHERE study_id = ?", (study_id,)).fetchall()
    for name in SITES[:2]:
        node = live.fed.nodes[name]
        runs = sqlite3.connect(node.store.with_suffix(".state.sqlite")).execute(
            "SELECT COUNT(*) FROM runs WHERE study_id = ?", (study_id,)).fetchone()[0]
        assert runs == 2
    profile_value = "8.41937"  # the profile's HbA1c: a digit string no other value holds
    hub = _tables_holding(live.fed.workdir / "hub.sqlite", profile_value)
    assert hub == ["studies"], f"the profile is kept in {hub}"
    for name in SITES:
        state = live.fed.nodes[name].store.with_suffix(".state.sqlite")
        assert _tables_holding(state, profile_value) == [], name


def _tables_holding(path, needle):
    db = sqlite3.connect(path)
    try:
        tables = [t for (t,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        return [t for t in tables
                if any(needle in str(value)
                       for row in db.execute(f'SELECT * FROM "{t}"').fetchall()
                       for value in row)]
    finally:
        db.close()


def test_research_only_patients_are_left_out_unless_they_opt_in(live, reference_sites,
                                                                tmp_path):
    node = live.fed.nodes["hospital_1"]
    people = reference_sites["hospital_1"]["people"]
    first = ref.lookup(reference_sites, PARAMS)["chosen"]["hospital_1"]
    matched = [int(p) for p in first["person_id"]]
    out, opted = matched[:5], matched[5:8]
    psv = dict(zip(*ref.person_source_values(live.data / "hospital_1"), strict=True))
    consent = tmp_path / "consent.csv"
    consent.write_text("person_source_value,tier,purposes\n"
                       + "".join(f"{psv[p]},research_only,\n" for p in out)
                       + "".join(f"{psv[p]},research_only,research;clinical_care\n"
                                 for p in opted))
    cli(live, "node", "consent", "import", str(consent), "--store", str(node.store))
    try:
        _, result = _lookup(live)
        assert result["nodes"]["hospital_1"]["candidates"] == len(people) - len(out)
        pooled = ref.lookup(reference_sites, PARAMS, excluded={"hospital_1": set(out)})
        distances = np.concatenate([c["distance"].to_numpy()
                                    for c in pooled["chosen"].values()])
        assert result["similarity"]["mean"] == pytest.approx(distances.mean(), rel=1e-9)
        assert not set(out) & set(pooled["chosen"]["hospital_1"]["person_id"])
        assert set(opted) <= set(pooled["chosen"]["hospital_1"]["person_id"])
    finally:
        consent.write_text("person_source_value,tier\n"
                           + "".join(f"{psv[p]},open\n" for p in out + opted))
        cli(live, "node", "consent", "import", str(consent), "--store", str(node.store))


def test_the_cli_lookup_gives_the_same_answer_as_the_sdk(live):
    from importlib import resources

    from healthspace.client.lookup import lookup_spec, run_lookup

    example = resources.files("healthspace.examples") / "cds_profile_t2d.json"
    proc = cli(live, "cds", "lookup", str(example), "--k", str(K), "--nodes", ",".join(SITES),
               "--json")
    answer = json.loads(proc.stdout)
    assert answer["matched"] == 3 * K and set(answer["nodes"]) == set(SITES)
    assert [g["name"] for g in answer["groups"]] == [
        "insulin", "sulfonylurea", "none of the candidates", "all matched"]
    view = run_lookup(live.consumer(), lookup_spec(example, k=K, nodes=SITES), timeout=180)
    assert view.result == answer  # the same deterministic lookup, by either path
    table = cli(live, "cds", "lookup", str(example), "--k", str(K), "--nodes",
                ",".join(SITES)).stdout
    assert "insulin" in table and "all matched" in table
    bad = cli(live, "cds", "lookup", str(example), "--k", "3", check=False)
    assert bad.returncode != 0 and "k" in (bad.stdout + bad.stderr)


def test_a_lookup_by_registry_name_equals_the_inline_lookup(live, registered):
    view = registered["t2d_complications"]
    params = {**PARAMS, "k": 30}
    client = live.consumer()
    by_name = client.wait(client.submit({"analysis": "similar_patients",
                                         "purpose": "clinical_care", "params": params,
                                         "registry": "t2d_complications",
                                         "nodes": SITES}).id, timeout=180)
    inline = client.wait(client.submit({"analysis": "similar_patients",
                                        "purpose": "clinical_care", "params": params,
                                        "cohort": view.cohort, "nodes": SITES}).id,
                         timeout=180)
    assert by_name.status == inline.status == "completed", (by_name.error, inline.error)
    assert by_name.result == inline.result and by_name.result["matched"] == 3 * 30
    for site in SITES:  # the pool came from the registry's rows on every node
        assert "rows from registry t2d_complications v1" in node_log(live, site)


def test_a_node_rebuilds_its_feature_matrix_when_the_store_changes_not_per_query(
        live, reference_sites, tmp_path):
    import threading
    import time

    from healthspace.cdm.ingest import ingest_dir
    from healthspace.cdm.store import state_path
    from healthspace.node.agent import NodeAgent
    from healthspace.node.state import NodeState

    from .conftest import OPEN_POLICY

    store = tmp_path / "cds_node.duckdb"
    ingest_dir(store, live.data / "hospital_1")
    live.fed.ensure_org("cds_lab", "data_centre")
    enrolled = live.fed.add_node("cds_node", "cds_lab", store, start=False, policy=OPEN_POLICY)
    agent = NodeAgent(hub=live.url, token=enrolled.token, store=store,
                      state=NodeState.open(state_path(store)), poll_wait=1.0)
    thread = threading.Thread(target=agent.run_forever, daemon=True)
    thread.start()
    try:
        params = {**PARAMS, "k": 20}
        spec = {"analysis": "similar_patients", "purpose": "clinical_care", "cohort": COHORT,
                "params": params, "nodes": ["cds_node"]}
        deadline = time.monotonic() + 60  # until the agent has published its policy
        while live.consumer().check(spec)["cds_node"].outcome != "allow":
            assert time.monotonic() < deadline, "cds_node never published its policy"
            time.sleep(0.2)
        _, first = _lookup(live, params, nodes=["cds_node"])
        before = len(reference_sites["hospital_1"]["people"])
        assert first["nodes"]["cds_node"]["candidates"] == before
        _lookup(live, params, nodes=["cds_node"])
        assert agent.features.builds == 1  # built by the first lookup, reused by the second
        ingest_dir(store, live.data / "hospital_2")  # a re-ingest: the store changes
        after = len(reference_sites["hospital_2"]["people"])
        deadline = time.monotonic() + 60
        while agent.features.builds < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert agent.features.builds == 2  # rebuilt by the agent itself, before any query
        assert [m.n for m in agent.features.entries.values()] == [after]
        _, second = _lookup(live, params, nodes=["cds_node"])
        assert second["nodes"]["cds_node"]["candidates"] == after != before
        assert agent.features.builds == 2  # the lookup paid for no build
    finally:
        agent.stop()
        thread.join(timeout=30)
