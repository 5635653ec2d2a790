"""Fraud screening on small hand-built claim sets, the payer-node analysis and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from healthspace.analyses.execute import run_alone
from healthspace.analyses.registry import get
from healthspace.cli.main import run
from healthspace.core.errors import InvalidInput
from healthspace.payer.screening import flag_claims, upcoding
from healthspace.sim import load_site


def claim(visit, person, admitted, discharged, principal="I50.9", adrg="FR3", drg="FR35",
          severity="none", hospital="h1", cost=1000.0):
    los = (pd.Timestamp(discharged) - pd.Timestamp(admitted)).days
    return {"visit_id": visit, "person_id": person, "admitted": admitted,
            "discharged": discharged, "hospital": hospital, "principal": principal,
            "adrg": adrg, "drg": drg, "severity": severity, "cost": cost, "los": los}


def test_split_admissions_and_duplicates():
    frame = pd.DataFrame([
        claim(1, 1, "2024-01-01", "2024-01-05"),
        claim(2, 1, "2024-01-12", "2024-01-14", hospital="h2"),   # 7 days later, other site
        claim(3, 1, "2024-03-01", "2024-03-03"),                  # 47 days later: not split
        claim(4, 2, "2024-01-01", "2024-01-05", principal="J18.9", adrg="ES3", drg="ES35"),
        claim(5, 2, "2024-01-08", "2024-01-10"),                  # other family: not split
        claim(6, 3, "2024-02-01", "2024-02-04", cost=777.0),
        claim(7, 3, "2024-02-01", "2024-02-04", cost=777.0),      # duplicate bill
        claim(8, 3, "2024-02-01", "2024-02-04", cost=778.0),      # other amount: not a dup
    ])
    flagged = flag_claims(frame, readmit_days=15).set_index("visit_id")
    assert flagged.index[flagged["split_admission"]].tolist() == [2]
    assert flagged.index[flagged["duplicate_billing"]].tolist() == [7]
    # 8 overlaps 6 (admitted before 6's discharge): not a readmission
    assert not flagged.loc[[1, 3, 4, 5, 6, 8], "split_admission"].any()
    assert flag_claims(frame, readmit_days=5).set_index("visit_id").loc[2, "split_admission"] \
        == False  # noqa: E712


def test_outlier_length_of_stay():
    stays = [claim(i, i, "2024-01-01", f"2024-01-{2 + i % 3:02d}") for i in range(1, 21)]
    stays.append(claim(99, 99, "2024-01-01", "2024-03-01"))
    flagged = flag_claims(pd.DataFrame(stays)).set_index("visit_id")
    assert flagged.index[flagged["outlier_los"]].tolist() == [99]


def test_upcoding_ranks_the_hospital_with_excess_severity():
    rng = np.random.default_rng(1)
    rows = []
    for h, rate in (("honest_a", 0.2), ("honest_b", 0.2), ("upcoder", 0.6)):
        for i in range(300):
            adrg = "FR3" if i % 2 else "ES3"
            severe = rng.random() < rate
            rows.append({"hospital": h, "adrg": adrg,
                         "severity": "cc" if severe else "none"})
    ranked = upcoding(pd.DataFrame(rows))
    assert ranked[0]["hospital"] == "upcoder" and ranked[0]["rank"] == 1
    top = ranked[0]
    assert top["ci"][0] > 1 > ranked[-1]["ci"][0]
    # observed / expected by hand: the network rate per ADRG times the hospital's cases
    frame = pd.DataFrame(rows)
    frame["severe"] = frame["severity"] == "cc"
    rate = frame.groupby("adrg")["severe"].mean()
    mine = frame[frame["hospital"] == "upcoder"]
    assert top["expected"] == pytest.approx(mine["adrg"].map(rate).sum())
    assert top["observed"] == int(mine["severe"].sum())


def test_the_payer_node_analysis_and_command(synth_dir, tmp_path, capsys):
    site = load_site(synth_dir / "payer")
    try:
        result = run_alone(site.con, site="payer", analysis="fraud_screen", params={})
    finally:
        site.con.close()
    impl = get("fraud_screen")
    assert {h["hospital"] for h in result["hospitals"]} == {"hospital_1", "hospital_2",
                                                           "hospital_3"}
    assert [r["rank"] for r in result["upcoding"]] == [1, 2, 3]
    assert result["claims"] == sum(h["claims"] for h in result["hospitals"])
    with pytest.raises(InvalidInput) as info:
        impl.check_nodes(impl.parse_params({}), ["a", "b"])
    assert info.value.field == "nodes"
    from healthspace.cdm.ingest import ingest_dir

    store = tmp_path / "payer.duckdb"
    ingest_dir(store, synth_dir / "payer")
    out = tmp_path / "flagged.csv"
    assert run(["payer", "screen", "--store", str(store), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["claims"] == result["claims"]
    assert len(pd.read_csv(out)) == doc["flagged"]
