"""Secure aggregation over the real hub and node processes: the hub stores only masked
payloads, yet the consumer gets the exact network totals."""

from __future__ import annotations

import base64
import json
import sqlite3

import numpy as np
import pytest

from healthspace.analyses.base import LocalContext
from healthspace.cdm.store import state_path
from healthspace.cohort.models import load_cohort
from healthspace.demo_data import showcase_cohort
from healthspace.sim import load_site

from .conftest import HOSPITALS
from .reference import t2d_feasibility

pytestmark = pytest.mark.xdist_group("federation")


def stored_partials(live, study_id: int) -> list[tuple[str, int, dict]]:
    db = sqlite3.connect(live.fed.workdir / "hub.sqlite")
    try:
        rows = db.execute(
            "SELECT n.name, t.round, json_extract(e.body, '$.payload.partial') FROM tasks t "
            "JOIN nodes n ON n.id = t.node_id JOIN envelopes e ON e.id = t.envelope_id "
            "WHERE t.study_id = ? ORDER BY t.round, n.name", (study_id,)).fetchall()
    finally:
        db.close()
    return [(name, rnd, json.loads(partial)) for name, rnd, partial in rows]


def test_secure_count_is_exact_and_the_hub_stores_only_masked_values(live):
    spec = {"analysis": "cohort_count", "cohort": showcase_cohort(), "nodes": HOSPITALS,
            "secure_aggregation": True}
    with live.consumer() as client:
        secure = client.wait(client.submit(spec).id, timeout=120)
        plain = client.wait(client.submit({**spec, "secure_aggregation": False}).id,
                            timeout=120)
    assert secure.status.value == "completed", (secure.error, [t.error for t in secure.tasks])
    assert secure.secure_aggregation is True
    truth = sum(t2d_feasibility(live.data / name) for name in HOSPITALS)
    assert secure.result["total"] == truth == plain.result["total"]
    assert secure.result["secure_aggregation"] is True
    # Every hospital is large and allows its own count: shown, as in the plain study.
    assert secure.result["sites"] == plain.result["sites"]
    assert [e.event for e in secure.timeline].count("secure_session") == 1
    stored = stored_partials(live, secure.id)
    assert len(stored) == len(HOSPITALS)
    for name, _, partial in stored:
        body = partial["secure"]
        assert set(body["masked"]["roster"]) == set(HOSPITALS)
        vector = body["masked"]["vectors"]["count"]
        value = int.from_bytes(base64.b64decode(vector["data"]), "little", signed=True)
        # A count c is encoded as c·2^40 < 2^60; masked, it is a uniform 128-bit number.
        assert abs(value) > 2**60, name
    # The masked count vectors of all nodes add up (mod 2^128) to the exact total only.
    total = sum(int.from_bytes(base64.b64decode(p["secure"]["masked"]["vectors"]["count"]
                                                ["data"]), "little") for _, _, p in stored)
    assert total % 2**128 == truth << 40


def test_secure_glm_rounds_reuse_one_session(live):
    from .conftest import ROSSI_NODES

    spec = {"analysis": "glm", "nodes": ROSSI_NODES, "secure_aggregation": True,
            "params": {"formula": "arrest ~ fin + age + prio", "family": "binomial"}}
    with live.consumer() as client:
        view = client.wait(client.submit(spec).id, timeout=300)
    assert view.status.value == "completed", view.error
    assert view.result["sites"] == dict.fromkeys(sorted(ROSSI_NODES))
    stored = stored_partials(live, view.id)
    sessions = {p["secure"]["masked"]["session_id"] for _, _, p in stored}
    assert len(sessions) == 1 and view.round >= 3
    xtwx = [np.frombuffer(base64.b64decode(p["secure"]["masked"]["vectors"]["xtwx"]["data"]),
                          dtype="<u8") for _, rnd, p in stored_partials(live, view.id) if rnd == 2]
    assert len(xtwx) == len(ROSSI_NODES)
    # Masked limbs look uniform: about half of all bits set.
    bits = np.unpackbits(np.concatenate(xtwx).view(np.uint8))
    assert 0.4 < bits.mean() < 0.6
    # From round 3 on, X'WX travels in the compact ring (its bound agreed from round 2).
    later = [p["secure"]["masked"]["vectors"]["xtwx"] for _, rnd, p in stored if rnd >= 3]
    assert later and all(v["ring_bits"] == 64 and v["scale_bits"] is not None for v in later)


def test_secure_aggregation_is_refused_for_an_analysis_without_sums(live):
    spec = {"analysis": "summary", "nodes": ["rossi_a", "rossi_b"], "secure_aggregation": True,
            "params": {"variables": ["age"]}}
    with live.consumer() as client, pytest.raises(Exception) as info:
        client.submit(spec)
    assert "secure_aggregation" in str(info.value)


def cohort_national_ids(site_dir, cohort) -> set[str]:
    """Reference: national ids of the cohort's persons, by the simulation's own loader."""
    site = load_site(site_dir)
    try:
        ctx = LocalContext(con=site.con, site=site_dir.name, cohort=load_cohort(cohort))
        sql, args = ctx.cohort_persons_sql()
        persons = [int(r[0]) for r in site.con.execute(f"SELECT person_id FROM ({sql})",
                                                         args).fetchall()]
    finally:
        site.con.close()
    vault = site.identities or {}
    return {vault[p].strip().upper() for p in persons if p in vault}


def test_psi_linkage_relayed_by_the_hub_counts_shared_patients(live):
    cohort = {"entry": {"condition": {"codes": ["ICD10:E11%"]}}}
    spec = {"analysis": "psi_link", "cohort": cohort, "nodes": ["hospital_1", "hospital_2"],
            "params": {"receiver": "hospital_2", "mode": "membership"}}
    with live.consumer() as client:
        view = client.wait(client.submit(spec).id, timeout=180)
    assert view.status.value == "completed", (view.error, [t.error for t in view.tasks])
    truth = (cohort_national_ids(live.data / "hospital_1", cohort)
             & cohort_national_ids(live.data / "hospital_2", cohort))
    assert view.result["intersection"] == len(truth) and len(truth) >= 10
    assert view.round == 3
    # The hub relayed only blinded points: no national id appears in anything it stored.
    stored = json.dumps([p for _, _, p in stored_partials(live, view.id)])
    assert not any(nid in stored for nid in truth)
    # The receiver kept which of its own patients are shared; the result does not say.
    db = sqlite3.connect(state_path(live.fed.nodes["hospital_2"].store))
    try:
        linked = db.execute("SELECT count(*) FROM psi_links WHERE study_id = ?",
                            (view.id,)).fetchone()[0]
    finally:
        db.close()
    assert linked == len(truth)
    assert "members" not in view.result
    # Record linkage is metered like any execution: a signed meter per task and round.
    with live.fed.operator() as op:
        meters = op.meter(study_id=view.id).records
    assert sorted((m.node, m.round) for m in meters) == sorted((t.node, t.round)
                                                              for t in view.tasks)
    assert all(m.meter.analysis == "psi_link" and m.meter.bytes > 0 for m in meters)
    assert all(m.meter.records_scanned > 0 for m in meters if m.round == 1)
