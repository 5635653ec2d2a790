"""CSV sinks and the OMOP table rows a hospital or the payer holds for one chunk of persons."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from healthspace.cdm.schema import GENDER_CONCEPTS, TABLES
from healthspace.cdm.synth_events import VISIT_CONCEPTS, VISIT_SOURCE, Rows, Visits
from healthspace.cdm.synth_people import EXTRACT, People
from healthspace.cdm.synth_records import DRG_CODES, UNITS
from healthspace.cdm.synth_vocab import CODE_STRINGS, CONCEPT_IDS, ix

_ARROW = {
    "BIGINT": pa.int64(), "INTEGER": pa.int32(), "DOUBLE": pa.float64(), "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("s"), "VARCHAR": pa.string(),
}
IDENTITY_COLUMNS = (("person_id", pa.int64()), ("national_id", pa.string()))
SITE_TABLES = ("person", "observation_period", "visit_occurrence", "condition_occurrence",
               "drug_exposure", "measurement", "procedure_occurrence", "death", "cost")
PAYER_TABLES = ("person", "visit_occurrence", "condition_occurrence", "drug_exposure",
                "procedure_occurrence", "cost", "payer_plan_period")

_UNIT_OF_CODE = np.full(len(CONCEPT_IDS), -1, dtype=np.int64)
_UNIT_NAMES = pa.array(list(UNITS.values()))
for _i, _code in enumerate(UNITS):
    _UNIT_OF_CODE[ix(_code)] = _i


def strings(dictionary: pa.Array, index: np.ndarray) -> pa.Array:
    """Strings by position in ``dictionary``; a negative index gives NULL."""
    return dictionary.take(pa.array(index, pa.int64(), mask=index < 0))


def _arrow(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    if isinstance(value, pa.Array):
        return value if value.type == typ else value.cast(typ)
    if isinstance(value, str):
        return pa.array([value], typ).take(pa.array(np.zeros(n, np.int64)))
    arr = np.broadcast_to(np.asarray(value), (n,))
    if typ == pa.date32():
        return pa.array(arr.astype(np.int32), pa.date32())
    return pa.array(arr, typ)


class CsvSink:
    """One CSV file written chunk by chunk: plain header, empty field = NULL, ISO dates."""

    def __init__(self, path: Path, columns: tuple[tuple[str, pa.DataType], ...]) -> None:
        self.columns = columns
        self.rows = 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close(), spans many chunks
        # Arrow quotes header names; write our own so headers read as plain names.
        self._file.write((",".join(name for name, _ in columns) + "\n").encode())
        self._options = pacsv.WriteOptions(include_header=False, quoting_style="none")

    @classmethod
    def cdm(cls, folder: Path, table: str) -> CsvSink:
        cols = tuple((c.name, _ARROW[c.type]) for c in TABLES[table])
        return cls(folder / f"{table}.csv", cols)

    def write(self, n: int, data: Mapping[str, Any]) -> None:
        unknown = set(data) - {name for name, _ in self.columns}
        if unknown:
            raise KeyError(f"not columns of {self._file.name}: {sorted(unknown)}")
        # Absent columns are string-typed NULLs: Arrow renders those fastest and the CSV
        # text is the same whatever the type of an empty field.
        arrays = [
            _arrow(data[name], n, typ) if name in data else pa.nulls(n, pa.string())
            for name, typ in self.columns
        ]
        table = pa.Table.from_arrays(arrays, names=[name for name, _ in self.columns])
        pacsv.write_csv(table, self._file, write_options=self._options)
        self.rows += n

    def close(self) -> None:
        self._file.close()


class Ids:
    """Running ids per table inside one holder's id space (``offset + 1, offset + 2, ...``)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self._used: dict[str, int] = defaultdict(int)

    def take(self, table: str, k: int) -> np.ndarray:
        ids = self.offset + self._used[table] + 1 + np.arange(k, dtype=np.int64)
        self._used[table] += k
        return ids


@dataclass
class Chunk:
    """Everything simulated for one block of the network's persons."""

    people: People
    visits: Visits
    cond: Rows
    drug: Rows
    lab: Rows
    proc: Rows
    total: np.ndarray  # fen per visit
    fund: np.ndarray  # fen per visit
    drg: np.ndarray  # index into DRG_CODES or -1
    national_id: pa.Array
    pseudonym: pa.Array


@dataclass
class Holder:
    """A data holder's output: its sinks, id space and record type (EHR or claim)."""

    sinks: dict[str, CsvSink]
    ids: Ids
    type_concept: int


def _persons(h: Holder, c: Chunk, pidx: np.ndarray, care_site: int | None) -> np.ndarray:
    """Write person + identity rows; return chunk-person -> local person_id (-1 if absent)."""
    p = c.people
    ids = h.ids.take("person", len(pidx))
    local = np.full(p.n, -1, dtype=np.int64)
    local[pidx] = ids
    born = p.birth[pidx].astype("datetime64[D]")
    month = born.astype("datetime64[M]")
    male = p.male[pidx]
    gender = np.where(male, GENDER_CONCEPTS["M"], GENDER_CONCEPTS["F"])
    h.sinks["person"].write(len(pidx), {
        "person_id": ids, "gender_concept_id": gender,
        "year_of_birth": born.astype("datetime64[Y]").astype(np.int64) + 1970,
        "month_of_birth": month.astype(np.int64) % 12 + 1,
        "day_of_birth": (born - month).astype(np.int64) + 1,
        "care_site_id": pa.nulls(len(pidx), pa.int64()) if care_site is None else care_site,
        "person_source_value": c.pseudonym.take(pa.array(pidx)),
        "gender_source_value": strings(pa.array(["F", "M"]), male.astype(np.int64)),
        "gender_source_concept_id": gender,
    })
    h.sinks["identity"].write(len(pidx), {
        "person_id": ids, "national_id": c.national_id.take(pa.array(pidx)),
    })
    return local


def _visits(h: Holder, c: Chunk, vidx: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Write visit rows; return chunk-visit -> visit_occurrence_id (-1 if not held here)."""
    v = c.visits
    ids = h.ids.take("visit_occurrence", len(vidx))
    vid = np.full(len(v), -1, dtype=np.int64)
    vid[vidx] = ids
    kind = v.kind[vidx].astype(np.int64)
    h.sinks["visit_occurrence"].write(len(vidx), {
        "visit_occurrence_id": ids, "person_id": local[v.person[vidx]],
        "visit_concept_id": VISIT_CONCEPTS[kind], "visit_start_date": v.start[vidx],
        "visit_end_date": v.end[vidx], "visit_type_concept_id": h.type_concept,
        "care_site_id": v.site[vidx] + 1,
        "visit_source_value": strings(pa.array(VISIT_SOURCE), kind),
        "visit_source_concept_id": VISIT_CONCEPTS[kind],
    })
    return vid


def _coded(h: Holder, c: Chunk, table: str, rows: Rows, vid: np.ndarray, local: np.ndarray,
           prefix: str) -> None:
    """Write rows of a coded event table (condition, drug, measurement, procedure)."""
    keep = np.flatnonzero(vid[rows.visit] >= 0)
    visit, code = rows.visit[keep], rows.code[keep]
    id_col = f"{table}_id" if table != "measurement" else "measurement_id"
    date_col = {"procedure_occurrence": "procedure_date", "measurement": "measurement_date",
                "drug_exposure": "drug_exposure_start_date"}.get(table, f"{prefix}_start_date")
    data = {
        id_col: h.ids.take(table, len(keep)),
        "person_id": local[c.visits.person[visit]],
        f"{prefix}_concept_id": CONCEPT_IDS[code],
        date_col: c.visits.start[visit],
        f"{prefix}_type_concept_id": h.type_concept,
        "visit_occurrence_id": vid[visit],
        f"{prefix}_source_value": strings(CODE_STRINGS, code),
        f"{prefix}_source_concept_id": CONCEPT_IDS[code],
    }
    if table == "condition_occurrence":
        status = strings(pa.array(["principal", "secondary"]), rows.value[keep].astype(np.int64))
        data["condition_status_source_value"] = status
    elif table == "drug_exposure":
        days = rows.value[keep].astype(np.int64)
        data.update(drug_exposure_end_date=c.visits.start[visit] + days - 1, days_supply=days,
                    quantity=rows.quantity[keep])
    elif table == "measurement":
        data.update(value_as_number=rows.value[keep],
                    unit_source_value=strings(_UNIT_NAMES, _UNIT_OF_CODE[code]))
    h.sinks[table].write(len(keep), data)


def _cost(h: Holder, c: Chunk, vidx: np.ndarray, vid: np.ndarray,
          extra: dict[str, Any] | None = None) -> None:
    total, fund = c.total[vidx], c.fund[vidx]
    h.sinks["cost"].write(len(vidx), {
        "cost_id": h.ids.take("cost", len(vidx)), "cost_event_id": vid[vidx],
        "cost_domain_id": "Visit", "cost_type_concept_id": h.type_concept,
        "total_charge": total / 100, "total_paid": total / 100,
        "paid_by_payer": fund / 100, "paid_by_patient": (total - fund) / 100,
        **(extra or {}),
    })


def write_site(h: Holder, c: Chunk, site: int) -> None:
    """A hospital's EHR view: its patients, their visits there and everything recorded."""
    p, v = c.people, c.visits
    pidx = np.flatnonzero((p.primary == site) | (p.secondary == site))
    local = _persons(h, c, pidx, site + 1)
    vidx = np.flatnonzero(v.site == site)
    # Observed here from the first visit here (entry for the home hospital) to the common end.
    who = v.person[vidx]
    first = np.r_[True, who[1:] != who[:-1]] if len(who) else np.zeros(0, bool)
    start = p.t0.copy()
    start[who[first]] = v.start[vidx][first]  # visits are sorted by person, then date
    h.sinks["observation_period"].write(len(pidx), {
        "observation_period_id": h.ids.take("observation_period", len(pidx)),
        "person_id": local[pidx], "observation_period_start_date": start[pidx],
        "observation_period_end_date": p.t1[pidx], "period_type_concept_id": h.type_concept,
    })
    vid = _visits(h, c, vidx, local)
    _coded(h, c, "condition_occurrence", c.cond, vid, local, "condition")
    _coded(h, c, "drug_exposure", c.drug, vid, local, "drug")
    _coded(h, c, "measurement", c.lab, vid, local, "measurement")
    _coded(h, c, "procedure_occurrence", c.proc, vid, local, "procedure")
    _cost(h, c, vidx, vid)
    dead = pidx[p.dead[pidx]]
    cause = np.where(p.on("lc", dead, p.t1[dead]), p.a["lc_code"][dead],
                     np.where(p.on("hf", dead, p.t1[dead]), p.a["hf_code"][dead], -1))
    cause_id = pa.array(CONCEPT_IDS[np.maximum(cause, 0)], pa.int64(), mask=cause < 0)
    h.sinks["death"].write(len(dead), {
        "person_id": local[dead], "death_date": p.t1[dead],
        "death_type_concept_id": h.type_concept, "cause_concept_id": cause_id,
        "cause_source_value": strings(CODE_STRINGS, cause), "cause_source_concept_id": cause_id,
    })


def write_payer(h: Holder, c: Chunk) -> np.ndarray:
    """The insurance bureau's settlement view: insured persons' visits at every hospital.

    Returns chunk-visit -> payer visit_occurrence_id (-1 for the uninsured's visits).
    """
    p, v = c.people, c.visits
    pidx = np.flatnonzero(p.insured)
    local = _persons(h, c, pidx, None)
    plan_ids = h.ids.take("payer_plan_period", len(pidx))
    plan_of = np.full(p.n, -1, dtype=np.int64)
    plan_of[pidx] = plan_ids
    h.sinks["payer_plan_period"].write(len(pidx), {
        "payer_plan_period_id": plan_ids, "person_id": local[pidx],
        "payer_plan_period_start_date": p.plan_start[pidx],
        "payer_plan_period_end_date": np.where(p.dead[pidx], p.t1[pidx], EXTRACT),
        "payer_source_value": "medical_insurance_bureau",
        "plan_source_value": strings(pa.array(["UEBMI", "URRBMI"]), p.plan[pidx].astype(np.int64)),
    })
    vidx = np.flatnonzero(p.insured[v.person])
    vid = _visits(h, c, vidx, local)
    _coded(h, c, "condition_occurrence", c.cond, vid, local, "condition")
    _coded(h, c, "drug_exposure", c.drug, vid, local, "drug")
    _coded(h, c, "procedure_occurrence", c.proc, vid, local, "procedure")  # billed items
    _cost(h, c, vidx, vid, {
        "payer_plan_period_id": plan_of[v.person[vidx]],
        "drg_source_value": strings(pa.array(DRG_CODES), c.drg[vidx]),
    })
    return vid
