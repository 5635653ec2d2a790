"""De-identification on ingest and the k-anonymity check, on a small hand-built export."""

from __future__ import annotations

import csv
import hmac
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from healthspace.cdm.deid import DeidConfig, k_anonymity, shift_of
from healthspace.cdm.ingest import ingest_dir
from healthspace.core.errors import InvalidInput

KEY = b"a network key of the data space"
HEX = "ab" * 32
PERSONS = [  # person_id, gender, year, month, day, location, person_source_value
    (1, 8532, 1949, 12, 31, 1, "11010519491231002X"),  # a Chinese resident id
    (2, 8507, 1980, 5, 6, 1, "123-45-6789"),  # a US SSN
    (3, 8507, 1980, None, None, 2, HEX),  # already a network pseudonym
    (4, 8532, 1975, 1, 2, 2, "MRN-77"),  # the hospital's own record id
    (5, 8532, 1975, 1, 2, 2, ""),
]


def write(folder: Path, table: str, header: list[str], rows: list[tuple]) -> None:
    with open(folder / f"{table}.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("export")
    write(src, "person", ["person_id", "gender_concept_id", "year_of_birth", "month_of_birth",
                          "day_of_birth", "location_id", "person_source_value"], PERSONS)
    write(src, "location", ["location_id", "address_1", "address_2", "city", "state"],
          [(1, "1 Chang'an Avenue", "Flat 3", "Beijing", "BJ"),
           (2, "9 Nanjing Road", None, "Shanghai", "SH")])
    write(src, "observation_period", ["observation_period_id", "person_id",
                                      "observation_period_start_date",
                                      "observation_period_end_date"],
          [(i, i, "2015-01-01", "2020-12-31") for i in range(1, 6)])
    write(src, "drug_exposure", ["drug_exposure_id", "person_id", "drug_exposure_start_date",
                                 "drug_exposure_end_date", "sig", "stop_reason"],
          [(1, 1, "2016-03-01", "2016-04-01", "take two tablets with food", None),
           (2, 2, "2017-05-05", "2017-05-20", None, "rash")])
    write(src, "condition_occurrence", ["condition_occurrence_id", "person_id",
                                        "condition_start_date", "stop_reason"],
          [(1, 1, "2016-02-20", "resolved after call with Dr Wang"),
           (2, 4, "2018-08-08", None)])
    return src


def q(store: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_identifiers_and_free_text_go_national_ids_become_pseudonyms(export, tmp_path):
    vault = tmp_path / "vault.csv"
    store = tmp_path / "s.duckdb"
    report = ingest_dir(store, export, deid=DeidConfig(network_key=KEY, vault_file=vault))
    psv = dict(q(store, "SELECT person_id, person_source_value FROM person"))
    pseudonym = {n: hmac.digest(KEY, n.encode(), "sha256").hex()
                 for n in ("11010519491231002X", "123-45-6789")}
    assert psv == {1: pseudonym["11010519491231002X"], 2: pseudonym["123-45-6789"], 3: HEX,
                   4: "MRN-77", 5: None}
    with open(vault, newline="") as fh:
        assert list(csv.reader(fh)) == [["person_id", "national_id"],
                                        ["1", "11010519491231002X"], ["2", "123-45-6789"]]
    assert q(store, "SELECT address_1, address_2, city FROM location ORDER BY 1 NULLS LAST") == [
        (None, None, "Beijing"), (None, None, "Shanghai")]
    assert q(store, "SELECT count(*) FROM drug_exposure WHERE sig IS NOT NULL "
                    "OR stop_reason IS NOT NULL") == [(0,)]
    assert q(store, "SELECT count(*) FROM condition_occurrence WHERE stop_reason IS NOT NULL"
             ) == [(0,)]
    assert report.deid == {
        "cleared": {"location.address_1": 2, "location.address_2": 1, "drug_exposure.sig": 1,
                    "drug_exposure.stop_reason": 1, "condition_occurrence.stop_reason": 1},
        "pseudonymised": 2, "already_pseudonymous": 1, "national_ids_to_vault": 2,
        "national_ids_dropped": 0, "date_shift_days": 0}
    # No national id, address or note survives anywhere in the store.
    dump = json.dumps([q(store, f"SELECT * FROM {t}") for t in
                       ("person", "location", "drug_exposure", "condition_occurrence")],
                      default=str)
    for secret in ("11010519491231002X", "123-45-6789", "Chang'an", "Flat 3", "tablets",
                   "Dr Wang"):
        assert secret not in dump


def test_without_a_key_national_ids_are_cleared_and_without_deid_nothing_changes(export,
                                                                                 tmp_path):
    store = tmp_path / "nokey.duckdb"
    report = ingest_dir(store, export, deid=DeidConfig())
    assert dict(q(store, "SELECT person_id, person_source_value FROM person WHERE person_id "
                         "IN (1, 2)")) == {1: None, 2: None}
    assert report.deid["national_ids_dropped"] == 2 and report.deid["pseudonymised"] == 0
    raw = tmp_path / "raw.duckdb"
    assert ingest_dir(raw, export, deid=None).deid is None
    assert q(raw, "SELECT person_source_value FROM person WHERE person_id = 2") == [
        ("123-45-6789",)]


def test_dates_shift_by_one_amount_per_person(export, tmp_path):
    secret = b"node secret"
    store = tmp_path / "shifted.duckdb"
    ingest_dir(store, export, deid=DeidConfig(date_shift_days=30, shift_secret=secret))
    shift = {pid: shift_of(secret, pid, 30) for pid in range(1, 6)}
    assert all(1 <= abs(d) <= 30 for d in shift.values()) and len(set(shift.values())) > 1
    got = dict(q(store, "SELECT drug_exposure_id, drug_exposure_start_date FROM drug_exposure"))
    assert (got[1] - date(2016, 3, 1)).days == shift[1]
    assert (got[2] - date(2017, 5, 5)).days == shift[2]
    # Intervals within a person hold: the condition still comes 10 days before the drug.
    (cond,) = q(store, "SELECT condition_start_date FROM condition_occurrence "
                       "WHERE person_id = 1")[0]
    assert (got[1] - cond).days == 10
    births = {r[0]: r[1:] for r in q(store, "SELECT person_id, year_of_birth, month_of_birth, "
                                            "day_of_birth FROM person")}
    moved = date(1949, 12, 31).toordinal() + shift[1]
    assert births[1] == (date.fromordinal(moved).year, date.fromordinal(moved).month,
                         date.fromordinal(moved).day)
    assert births[3] == (1980, None, None)  # a year alone is coarse already
    again = tmp_path / "again.duckdb"
    ingest_dir(again, export, deid=DeidConfig(date_shift_days=30, shift_secret=secret))
    assert q(again, "SELECT * FROM drug_exposure ORDER BY 1") == q(
        store, "SELECT * FROM drug_exposure ORDER BY 1")
    assert shift_of(b"another secret", 1, 30) != shift[1] or shift_of(
        b"another secret", 2, 30) != shift[2]


def test_k_anonymity_counts_small_classes(export, tmp_path):
    store = tmp_path / "k.duckdb"
    ingest_dir(store, export)
    con = duckdb.connect(str(store), read_only=True)
    try:
        # (year, gender): (1949,F) 1, (1980,M) 2, (1975,F) 2.
        assert k_anonymity(con, ["year_of_birth", "gender"], 2) == {
            "quasi_identifiers": ["year_of_birth", "gender"], "k": 2, "persons": 5,
            "classes": 3, "classes_below_k": 1, "persons_below_k": 1, "smallest_class": 1,
            "k_anonymous": False}
        assert k_anonymity(con, ["region"], 2)["k_anonymous"] is True  # BJ 2, SH 3
        with pytest.raises(InvalidInput, match="quasi-identifiers"):
            k_anonymity(con, ["name"], 2)
    finally:
        con.close()


def test_cli_deidentifies_by_default_and_fills_the_vault(export, tmp_path):
    key = tmp_path / "net.key"
    key.write_bytes(KEY)
    store = tmp_path / "cli.duckdb"

    def node(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "healthspace", "node", *args],
                              capture_output=True, text=True, timeout=120)

    proc = node("ingest", str(export), "--store", str(store), "--network-key-file", str(key),
                "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["deid"]["pseudonymised"] == 2 and doc["identity_vault_rows"] == 2
    db = store.with_suffix(".state.sqlite")
    import sqlite3

    with sqlite3.connect(db) as state:
        assert sorted(state.execute("SELECT * FROM identity_vault")) == [
            (1, "11010519491231002X"), (2, "123-45-6789")]
    raw = node("ingest", str(export), "--store", str(tmp_path / "raw.duckdb"), "--no-deid",
               "--json")
    assert json.loads(raw.stdout)["deid"] is None
    below = node("kanon", "--store", str(store), "--quasi", "year_of_birth,gender", "--k", "2")
    assert below.returncode == 4 and "not k-anonymous" in below.stdout
    fine = node("kanon", "--store", str(store), "--quasi", "region", "--k", "2", "--json")
    assert fine.returncode == 0 and json.loads(fine.stdout)["k_anonymous"] is True
    bad = node("kanon", "--store", str(store), "--quasi", "name")
    assert bad.returncode == 2 and "quasi" in bad.stderr
