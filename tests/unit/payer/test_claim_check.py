"""Commercial-insurance claim verification: outcomes against an independent SQL reference,
and that neither the payer's node, the hub nor another client learns more than the answer."""

from __future__ import annotations

import csv
import json
from datetime import date

import duckdb
import pytest

from healthspace.analyses.registry import get
from healthspace.cli.main import run
from healthspace.core.errors import InvalidInput
from healthspace.payer.claims import ClaimChecker, parse_claims, read_claims
from healthspace.sim import load_site, simulate


@pytest.fixture(scope="module")
def payer(synth_dir):
    site = load_site(synth_dir / "payer")
    yield site
    site.con.close()


@pytest.fixture(scope="module")
def claims(synth_dir):
    """30 settled visits in one month, then altered: 10 exact (match), 10 with the amount
    raised 15 % (amount_mismatch), 10 with a national id nobody holds (no_match)."""
    con = duckdb.connect()
    folder = synth_dir / "payer"
    rows = con.execute(f"""
        WITH settled AS (
          SELECT i.national_id, v.visit_start_date AS day, c.condition_source_value AS dx,
                 k.total_charge AS amount
          FROM read_csv_auto('{folder}/visit_occurrence.csv') v
          JOIN read_csv_auto('{folder}/identity.csv') i USING (person_id)
          JOIN read_csv_auto('{folder}/condition_occurrence.csv') c
            ON c.visit_occurrence_id = v.visit_occurrence_id
           AND c.condition_status_source_value = 'principal'
          JOIN read_csv_auto('{folder}/cost.csv') k ON k.cost_event_id = v.visit_occurrence_id
          WHERE v.visit_start_date BETWEEN DATE '2022-03-01' AND DATE '2022-03-31'),
        single AS (SELECT * FROM settled QUALIFY count(*) OVER
                   (PARTITION BY national_id, day, dx) = 1)
        SELECT * FROM single ORDER BY national_id, day LIMIT 30""").fetchall()
    assert len(rows) == 30
    out, expected = [], {}
    for i, (nid, day, dx, amount) in enumerate(rows):
        kind = ("match", "amount_mismatch", "no_match")[i % 3]
        if kind == "amount_mismatch":
            amount = round(amount * 1.15, 2)
        if kind == "no_match":
            nid = "99" + nid[2:]
        out.append({"claim_id": f"C{i:03d}", "national_id": nid, "date": day.isoformat(),
                    "diagnosis": dx, "amount": f"{amount:.2f}"})
        expected[f"C{i:03d}"] = kind
    return out, expected


def test_each_claim_gets_its_outcome(payer, claims):
    rows, expected = claims
    checker = ClaimChecker(parse_claims(rows))
    result = simulate("claim_check", {"payer": payer}, params=checker.params())
    outcomes = {r["claim_id"]: r["outcome"] for r in checker.outcomes(result)}
    assert outcomes == expected
    assert result["claims"] == len(rows)  # all the payer node learns of the insurer's set
    days = sorted(r["date"] for r in rows)
    assert result["period"] == {"start": days[0], "end": days[-1]}


def test_nothing_but_blinded_points_reaches_the_payer_or_the_hub(payer, claims):
    rows, _ = claims
    checker = ClaimChecker(parse_claims(rows))
    params = checker.params()
    result = simulate("claim_check", {"payer": payer}, params=params)
    sent, back = json.dumps(params), json.dumps(result)
    for row in rows:
        for value in (row["national_id"], row["national_id"][:12], row["amount"]):
            assert value not in sent and value not in back
    assert "|" not in sent  # no key string in clear
    # another client (fresh scalars) cannot read this answer: every claim looks unmatched
    other = ClaimChecker(parse_claims(rows))
    assert {r["outcome"] for r in other.outcomes(result)} == {"no_match"}


def test_the_period_limits_the_payers_side(payer, claims):
    rows, expected = claims
    checker = ClaimChecker(parse_claims(rows))
    params = checker.params((date(2021, 1, 1), date(2021, 1, 31)))
    result = simulate("claim_check", {"payer": payer}, params=params)
    assert {r["outcome"] for r in checker.outcomes(result)} == {"no_match"}
    assert result["settled_visits"] < 5000


@pytest.mark.parametrize(("row", "field"), [
    ({"claim_id": "A", "national_id": "1", "date": "03/01/2022", "diagnosis": "I10",
      "amount": "1"}, "claims[1].date"),
    ({"claim_id": "A", "national_id": "1", "date": "2022-03-01", "diagnosis": "I10",
      "amount": "ten"}, "claims[1].amount"),
    ({"claim_id": "A", "national_id": "", "date": "2022-03-01", "diagnosis": "I10",
      "amount": "1"}, "claims[1].national_id"),
])
def test_bad_claims_name_the_row_and_column(row, field):
    with pytest.raises(InvalidInput) as bad:
        parse_claims([row])
    assert bad.value.field == field


def test_claim_files_need_their_columns_and_unique_ids(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text("claim_id,national_id,date\nA,1,2022-01-01\n")
    with pytest.raises(InvalidInput) as bad:
        read_claims(path)
    assert "amount" in bad.value.message and bad.value.field == "file"
    path.write_text("claim_id,national_id,date,diagnosis,amount\nA,1,2022-01-01,I10,5\n"
                    "A,2,2022-01-01,I10,5\n")
    with pytest.raises(InvalidInput) as bad:
        read_claims(path)
    assert bad.value.field == "claims.csv[2].claim_id"


def test_a_claim_check_runs_on_one_node_and_validates_its_frames():
    impl = get("claim_check")
    with pytest.raises(InvalidInput) as bad:
        impl.check_nodes(None, ["payer", "hospital_1"])  # type: ignore[arg-type]
    assert bad.value.field == "nodes"
    with pytest.raises(InvalidInput) as bad:
        impl.parse_params({"requests": {"visit": ["AAAA"]}})
    assert bad.value.field.startswith("params")


def test_sim_claim_check_command(tmp_path, synth_dir, claims, capsys):
    rows, expected = claims
    path = tmp_path / "claims.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    answers = tmp_path / "answers.csv"
    code = run(["sim", "claim-check", "--file", str(path), "--site",
                f"payer={synth_dir / 'payer'}", "--out", str(answers), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"] == {"match": 10, "amount_mismatch": 10, "no_match": 10}
    with open(answers, newline="") as handle:
        assert {r["claim_id"]: r["outcome"] for r in csv.DictReader(handle)} == expected
