"""De-identification on ingest, and a k-anonymity check over quasi-identifiers.

Applied inside the ingest transaction, after the tables are loaded (``load_into``):

* direct identifiers go: the address lines of ``location``;
* free text goes: ``drug_exposure.sig`` and the ``stop_reason`` fields;
* a ``person_source_value`` that is a national id (``national_id_pattern``: Chinese resident
  id, US SSN by default) becomes the network pseudonym HMAC-SHA256(key, id) with the network
  key, and is cleared without one; the id itself goes only to the node's identity vault
  (``vault_file``), never into the store. A network pseudonym (64 hex digits) is not
  re-hashed, and other source values (a hospital's own record ids) are kept;
* optionally every date of a person moves by a random number of days in ``[-N, N]``, the same
  for all of that person's records (so intervals, ages at index and orderings within a person
  hold), derived from a node secret.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from healthspace.cdm.schema import PERSON_TABLES, TABLES

PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
# Chinese resident identity card numbers (17 digits and a check character) and US SSNs.
NATIONAL_ID_PATTERN = r"^(\d{17}[\dXx]|\d{3}-\d{2}-\d{4})$"
DIRECT_IDENTIFIERS = {"location": ("address_1", "address_2")}
FREE_TEXT = {"drug_exposure": ("sig", "stop_reason"), "condition_occurrence": ("stop_reason",)}
QUASI_IDENTIFIERS = {
    "year_of_birth": "p.year_of_birth",
    "gender": "p.gender_concept_id",
    "region": "coalesce(l.state, l.county, l.zip)",
    "age_band": "CAST(floor((year(current_date) - p.year_of_birth) / 10) * 10 AS INTEGER)",
}


@dataclass(frozen=True)
class DeidConfig:
    """How a node de-identifies what it ingests (on by default; docs/deidentification.md)."""

    drop_direct_identifiers: bool = True
    drop_free_text: bool = True
    network_key: bytes | None = None
    date_shift_days: int = 0
    shift_secret: bytes | None = None
    vault_file: Path | None = None  # national ids found in person_source_value go here
    national_id_pattern: str = NATIONAL_ID_PATTERN


@dataclass
class DeidReport:
    cleared: dict[str, int] = field(default_factory=dict)  # table.column -> values removed
    pseudonymised: int = 0
    already_pseudonymous: int = 0
    national_ids_to_vault: int = 0
    national_ids_dropped: int = 0
    date_shift_days: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _temp_table(con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, list[Any]]
                ) -> None:
    """A temp table from Python columns in one step (row-by-row inserts are slow in DuckDB)."""
    import pandas as pd

    frame = pd.DataFrame(columns)
    con.register("_deid_frame", frame)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _deid_frame")
    finally:
        con.unregister("_deid_frame")


def _clear(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL").fetchone()
    con.execute(f"UPDATE {table} SET {column} = NULL WHERE {column} IS NOT NULL")
    return int(row[0]) if row else 0


def _pseudonyms(con: duckdb.DuckDBPyConnection, config: DeidConfig, report: DeidReport) -> None:
    rows = con.execute("SELECT person_id, person_source_value FROM person "
                       "WHERE person_source_value IS NOT NULL "
                       "AND trim(person_source_value) <> ''").fetchall()
    national = re.compile(config.national_id_pattern)
    values = [(int(pid), str(value).strip()) for pid, value in rows]
    raw = [(pid, v) for pid, v in values if national.match(v)]
    report.already_pseudonymous = sum(bool(PSEUDONYM.match(v)) for _, v in values)
    if not raw:
        return
    if config.vault_file is not None:
        with open(config.vault_file, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if fh.tell() == 0:
                writer.writerow(["person_id", "national_id"])
            writer.writerows(raw)
        report.national_ids_to_vault = len(raw)
    else:
        report.national_ids_dropped = len(raw)
    key = config.network_key
    new = [(pid, hmac.digest(key, nid.encode("utf-8"), "sha256").hex() if key else None)
           for pid, nid in raw]
    _temp_table(con, "_deid_psv", {"person_id": [p for p, _ in new],
                                    "psv": [v for _, v in new]})
    con.execute("UPDATE person SET person_source_value = d.psv FROM _deid_psv d "
                "WHERE person.person_id = d.person_id")
    con.execute("DROP TABLE _deid_psv")
    report.pseudonymised = len(raw) if key else 0


def shift_of(secret: bytes, person_id: int, days: int) -> int:
    """The person's date shift in ``[-days, days]``, never 0, stable for a secret."""
    u = int.from_bytes(hmac.digest(secret, str(person_id).encode(), "sha256")[:8], "big")
    shift = u % (2 * days) - days  # [-days, days - 1]
    return shift if shift < 0 else shift + 1  # [-days, -1] ∪ [1, days]


def _shift_dates(con: duckdb.DuckDBPyConnection, config: DeidConfig) -> None:
    days = config.date_shift_days
    secret = config.shift_secret or hashlib.sha256(b"unset").digest()
    ids = [int(r[0]) for r in con.execute("SELECT person_id FROM person").fetchall()]
    _temp_table(con, "_deid_shift_raw", {"person_id": ids,
                                          "d": [shift_of(secret, pid, days) for pid in ids]})
    con.execute("CREATE OR REPLACE TEMP TABLE _deid_shift AS SELECT CAST(person_id AS BIGINT) "
                "AS person_id, CAST(d AS INTEGER) AS d FROM _deid_shift_raw")
    con.execute("DROP TABLE _deid_shift_raw")
    for table in (*PERSON_TABLES, "person"):
        cols = [c for c in TABLES[table] if c.type in ("DATE", "TIMESTAMP")]
        if not cols:
            continue
        sets = ", ".join(f"{c.name} = {c.name} + " + ("s.d" if c.type == "DATE" else
                                                       "to_days(s.d)") for c in cols)
        con.execute(f"UPDATE {table} SET {sets} FROM _deid_shift s "
                    f"WHERE {table}.person_id = s.person_id")
    # A full birth date moves with the person; a year of birth alone is coarse already.
    con.execute("""UPDATE person SET year_of_birth = year(b), month_of_birth = month(b),
        day_of_birth = day(b) FROM (SELECT p.person_id AS id,
            make_date(p.year_of_birth, p.month_of_birth, p.day_of_birth) + s.d AS b
            FROM person p JOIN _deid_shift s USING (person_id)
            WHERE p.month_of_birth IS NOT NULL AND p.day_of_birth IS NOT NULL) x
        WHERE person.person_id = x.id""")
    con.execute("DROP TABLE _deid_shift")


def deidentify(con: duckdb.DuckDBPyConnection, config: DeidConfig) -> DeidReport:
    """De-identify the loaded CDM tables in place (the caller's transaction)."""
    report = DeidReport(date_shift_days=config.date_shift_days)
    targets: dict[str, tuple[str, ...]] = {}
    if config.drop_direct_identifiers:
        targets.update(DIRECT_IDENTIFIERS)
    if config.drop_free_text:
        for table, cols in FREE_TEXT.items():
            targets[table] = targets.get(table, ()) + cols
    for table, cols in targets.items():
        for column in cols:
            if n := _clear(con, table, column):
                report.cleared[f"{table}.{column}"] = n
    _pseudonyms(con, config, report)
    if config.date_shift_days > 0:
        _shift_dates(con, config)
    return report


def k_anonymity(con: duckdb.DuckDBPyConnection, quasi: list[str], k: int) -> dict[str, Any]:
    """Equivalence classes of persons over ``quasi`` (names in QUASI_IDENTIFIERS) smaller than
    ``k``: how many classes and persons fall below. Nothing but class sizes is returned."""
    unknown = [q for q in quasi if q not in QUASI_IDENTIFIERS]
    if unknown or not quasi:
        from healthspace.core.errors import InvalidInput

        raise InvalidInput(f"quasi-identifiers must be among {', '.join(QUASI_IDENTIFIERS)}; "
                           f"got {', '.join(unknown) or 'none'}", field="quasi")
    expr = ", ".join(f"{QUASI_IDENTIFIERS[q]} AS {q}" for q in quasi)
    sizes = [int(r[0]) for r in con.execute(
        f"SELECT count(*) FROM (SELECT {expr} FROM person p "
        "LEFT JOIN location l ON l.location_id = p.location_id) "
        f"GROUP BY {', '.join(quasi)}").fetchall()]
    below = [s for s in sizes if s < k]
    return {"quasi_identifiers": quasi, "k": k, "persons": sum(sizes), "classes": len(sizes),
            "classes_below_k": len(below), "persons_below_k": sum(below),
            "smallest_class": min(sizes) if sizes else None, "k_anonymous": not below}
