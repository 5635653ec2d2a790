"""HL7 FHIR R4 → OMOP CDM: stream Bundles and NDJSON files into CDM CSV files for ingest.

``convert(src, out)`` reads every ``*.json`` (a Bundle of any type, or a single resource) and
``*.ndjson`` file under ``src`` one file at a time and writes one CSV per CDM table, which
``healthspace.cdm.ingest`` then validates and loads like any OMOP export. Memory grows with
the number of persons (their observation span), never with the number of files or resources.

Mapping (docs/fhir.md): Patient → person (+ death from ``deceasedDateTime``), Encounter →
visit_occurrence, Condition → condition_occurrence, MedicationRequest / MedicationStatement /
MedicationAdministration → drug_exposure, numeric Observation (and each numeric component,
e.g. systolic and diastolic blood pressure) → measurement, Procedure → procedure_occurrence,
ExplanationOfBenefit (else Claim) totals → cost. Every code keeps its system as vocabulary
(SNOMED, LOINC, RxNorm, ICD10, ATC, …; an unknown system keeps its URI) and is added to the
``concept`` table, so ``VOCAB:CODE`` cohort criteria work on imported data. Ids are derived
from the resources' own ids (stable across files and re-imports), so references — ``urn:uuid``
full URLs and relative ``Type/id`` — resolve without holding an index. Names, addresses,
telecoms and free text are never mapped; a national id (e.g. US SSN) goes to ``identity.csv``
(the node's identity vault) and, with a network key, into ``person_source_value`` as the
network pseudonym HMAC-SHA256(key, id).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from healthspace.cdm.fhir_read import (
    Refs,
    coding,
    fhir_date,
    fhir_datetime,
    resources,
    source_files,
    stable_id,
)
from healthspace.cdm.schema import GENDER_CONCEPTS, VISIT_CONCEPTS, column_names
from healthspace.core.errors import IngestError

NATIONAL_ID_SYSTEMS = ("http://hl7.org/fhir/sid/us-ssn", "urn:oid:2.16.156.10011.1.1",
                       "http://www.moh.gov.cn/identity")
ENCOUNTER_CLASSES = {"IMP": "IP", "ACUTE": "IP", "NONAC": "IP", "AMB": "OP", "VR": "OP",
                     "HH": "OP", "EMER": "ER"}
VISIT_NAMES = {"IP": "Inpatient Visit", "OP": "Outpatient Visit", "ER": "Emergency Room Visit"}
TYPE_EHR = 32817  # OMOP type concept: EHR
CUSTOM_CONCEPT_BASE = 2_000_000_000  # OMOP's range for site-local concepts
DOMAINS = {"condition_occurrence": "Condition", "drug_exposure": "Drug",
           "measurement": "Measurement", "procedure_occurrence": "Procedure",
           "visit_occurrence": "Visit"}

Progress = Callable[[str, int, int], None]


def concept_id(vocabulary: str, code: str) -> int:
    digest = hashlib.sha256(f"{vocabulary}|{code}".encode()).digest()[:6]
    return CUSTOM_CONCEPT_BASE + int.from_bytes(digest, "big")


@dataclass
class Stats:
    """What a conversion read and wrote, for the ingest report and the progress bar."""

    files: int = 0
    resources: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> resources not mapped
    persons_with_national_id: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _Writer:
    """One CSV per CDM table, opened lazily, plus the concepts and observation spans seen."""

    def __init__(self, out: Path, stats: Stats) -> None:
        self.out, self.stats = out, stats
        self._files: dict[str, tuple[IO[str], Any]] = {}
        self.concepts: dict[int, tuple[str, str, str, str]] = {}
        self.spans: dict[int, list[str]] = {}

    def row(self, table: str, values: dict[str, Any]) -> None:
        if table not in self._files:
            fh = open(self.out / f"{table}.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
            writer = csv.DictWriter(fh, fieldnames=column_names(table), extrasaction="raise")
            writer.writeheader()
            self._files[table] = (fh, writer)
        self._files[table][1].writerow(values)
        self.stats.rows[table] = self.stats.rows.get(table, 0) + 1

    def concept(self, table: str, coding: tuple[str, str, str]) -> int:
        vocabulary, code, display = coding
        cid = concept_id(vocabulary, code)
        self.concepts.setdefault(cid, (vocabulary, code, display, DOMAINS.get(table, "")))
        return cid

    def seen(self, person_id: int, day: str | None) -> None:
        if day is None:
            return
        span = self.spans.get(person_id)
        if span is None:
            self.spans[person_id] = [day, day]
        else:
            span[0], span[1] = min(span[0], day), max(span[1], day)

    def close(self) -> None:
        for cid, (vocabulary, code, display, domain) in sorted(self.concepts.items()):
            self.row("concept", {"concept_id": cid, "concept_name": display[:255],
                                 "domain_id": domain, "vocabulary_id": vocabulary,
                                 "concept_class_id": "", "standard_concept": "",
                                 "concept_code": code})
        for i, (pid, (start, end)) in enumerate(sorted(self.spans.items()), start=1):
            self.row("observation_period", {
                "observation_period_id": i, "person_id": pid,
                "observation_period_start_date": start, "observation_period_end_date": end,
                "period_type_concept_id": TYPE_EHR})
        for fh, _ in self._files.values():
            fh.close()


class _Mapper:
    def __init__(self, writer: _Writer, stats: Stats, key: bytes | None, identity: Any) -> None:
        self.w, self.stats, self.key, self.identity = writer, stats, key, identity
        self.refs = Refs()

    def person(self, r: dict[str, Any]) -> int | None:
        return self.refs.id(r.get("subject") or r.get("patient"), "Patient")

    def visit(self, r: dict[str, Any]) -> int | None:
        return self.refs.id(r.get("encounter") or r.get("context"), "Encounter")

    def patient(self, r: dict[str, Any]) -> None:
        pid = stable_id("Patient", str(r.get("id")))
        birth = fhir_date(r.get("birthDate"))
        if birth is None:
            self.stats.skip("Patient without birthDate")
            return
        national = next((str(i["value"]) for i in r.get("identifier") or []
                         if isinstance(i, dict) and i.get("system") in NATIONAL_ID_SYSTEMS
                         and i.get("value")), None)
        pseudonym = None
        if national is not None:
            self.identity.writerow([pid, national])
            self.stats.persons_with_national_id += 1
            if self.key is not None:
                pseudonym = hmac.digest(self.key, national.encode("utf-8"), "sha256").hex()
        gender = str(r.get("gender") or "")
        self.w.row("person", {
            "person_id": pid, "gender_concept_id": GENDER_CONCEPTS.get(gender[:1].upper(), 0),
            "year_of_birth": birth[:4], "month_of_birth": int(birth[5:7]),
            "day_of_birth": int(birth[8:10]), "person_source_value": pseudonym,
            "gender_source_value": gender})
        death = fhir_date(r.get("deceasedDateTime"))
        if death is not None:
            self.w.row("death", {"person_id": pid, "death_date": death,
                                 "death_datetime": fhir_datetime(r.get("deceasedDateTime")),
                                 "death_type_concept_id": TYPE_EHR})
            self.w.seen(pid, death)
        elif r.get("deceasedBoolean") is True:
            self.stats.skip("Patient deceased without a date")

    def encounter(self, r: dict[str, Any]) -> None:
        pid, period = self.person(r), r.get("period") or {}
        start = fhir_date(period.get("start"))
        if pid is None or start is None:
            self.stats.skip("Encounter without subject or period.start")
            return
        kind = ENCOUNTER_CLASSES.get(str((r.get("class") or {}).get("code", "")).upper(), "OP")
        self.w.concepts.setdefault(VISIT_CONCEPTS[kind], ("Visit", kind, VISIT_NAMES[kind],
                                                          "Visit"))  # OMOP's standard ids
        self.w.row("visit_occurrence", {
            "visit_occurrence_id": stable_id("Encounter", str(r.get("id"))), "person_id": pid,
            "visit_concept_id": VISIT_CONCEPTS[kind], "visit_start_date": start,
            "visit_start_datetime": fhir_datetime(period.get("start")),
            "visit_end_date": fhir_date(period.get("end")) or start,
            "visit_end_datetime": fhir_datetime(period.get("end")),
            "visit_type_concept_id": TYPE_EHR, "visit_source_value": kind})
        self.w.seen(pid, start)
        self.w.seen(pid, fhir_date(period.get("end")))

    def _event(self, r: dict[str, Any], table: str, coding: tuple[str, str, str] | None,
               start: str | None, extra: dict[str, Any], prefix: str) -> None:
        pid = self.person(r)
        if pid is None or start is None or coding is None:
            self.stats.skip(f"{r.get('resourceType')} without subject, code or date")
            return
        cid = self.w.concept(table, coding)
        self.w.row(table, {
            f"{table}_id": stable_id(str(r.get("resourceType")), str(r.get("id"))) + extra.pop(
                "_offset", 0),
            "person_id": pid, f"{prefix}_concept_id": cid, f"{prefix}_source_concept_id": cid,
            f"{prefix}_source_value": f"{coding[0]}:{coding[1]}"[:255],
            f"{prefix}_type_concept_id": TYPE_EHR, "visit_occurrence_id": self.visit(r),
            **extra})
        self.w.seen(pid, start)

    def condition(self, r: dict[str, Any]) -> None:
        onset = (r.get("onsetDateTime") or (r.get("onsetPeriod") or {}).get("start")
                 or r.get("recordedDate"))
        start = fhir_date(onset)
        self._event(r, "condition_occurrence", coding(r.get("code")), start, {
            "condition_start_date": start, "condition_start_datetime": fhir_datetime(onset),
            "condition_end_date": fhir_date(r.get("abatementDateTime"))}, "condition")

    def medication(self, r: dict[str, Any]) -> None:
        period = r.get("effectivePeriod") or {}
        when = (r.get("authoredOn") or r.get("effectiveDateTime") or period.get("start")
                or r.get("dateAsserted"))
        start = fhir_date(when)
        self._event(r, "drug_exposure", coding(r.get("medicationCodeableConcept")), start, {
            "drug_exposure_start_date": start, "drug_exposure_start_datetime": fhir_datetime(when),
            "drug_exposure_end_date": fhir_date(period.get("end")) or start}, "drug")

    def procedure(self, r: dict[str, Any]) -> None:
        period = r.get("performedPeriod") or {}
        when = r.get("performedDateTime") or period.get("start")
        start = fhir_date(when)
        self._event(r, "procedure_occurrence", coding(r.get("code")), start, {
            "procedure_date": start, "procedure_datetime": fhir_datetime(when),
            "procedure_end_date": fhir_date(period.get("end"))}, "procedure")

    def observation(self, r: dict[str, Any]) -> None:
        when = r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start") \
            or r.get("issued")
        start = fhir_date(when)
        parts = [(r.get("code"), r.get("valueQuantity"))]
        parts += [(c.get("code"), c.get("valueQuantity")) for c in r.get("component") or []
                  if isinstance(c, dict)]
        mapped = False
        for offset, (code, quantity) in enumerate(parts):
            if not isinstance(quantity, dict) or not isinstance(quantity.get("value"),
                                                                 int | float):
                continue
            mapped = True
            self._event(r, "measurement", coding(code), start, {
                "_offset": offset, "measurement_date": start,
                "measurement_datetime": fhir_datetime(when),
                "value_as_number": quantity["value"],
                "unit_source_value": str(quantity.get("unit") or quantity.get("code") or "")},
                "measurement")
        if not mapped:
            self.stats.skip("Observation without a numeric value")

    def cost(self, r: dict[str, Any]) -> None:
        pid = self.person(r)
        visit = next((self.refs.id(e, "Encounter") for item in r.get("item") or []
                      for e in (item.get("encounter") or []) if isinstance(e, dict)), None)
        if pid is None or visit is None:
            self.stats.skip(f"{r.get('resourceType')} without patient or encounter")
            return
        total = r.get("total")
        charge = None
        if isinstance(total, dict):  # Claim.total: Money
            charge = total.get("value")
        elif isinstance(total, list) and total:  # ExplanationOfBenefit.total[]: the submitted
            charge = (total[0].get("amount") or {}).get("value")
        paid = ((r.get("payment") or {}).get("amount") or {}).get("value")
        self.w.row("cost", {"cost_id": stable_id(str(r.get("resourceType")), str(r.get("id"))),
                            "cost_event_id": visit, "cost_domain_id": "Visit",
                            "cost_type_concept_id": TYPE_EHR, "total_charge": charge,
                            "paid_by_payer": paid})


HANDLERS: dict[str, Callable[[_Mapper, dict[str, Any]], None]] = {
    "Patient": _Mapper.patient,
    "Encounter": _Mapper.encounter,
    "Condition": _Mapper.condition,
    "MedicationRequest": _Mapper.medication,
    "MedicationStatement": _Mapper.medication,
    "MedicationAdministration": _Mapper.medication,
    "Observation": _Mapper.observation,
    "Procedure": _Mapper.procedure,
}


def convert(src: Path, out: Path, *, network_key: bytes | None = None,
            progress: Progress | None = None) -> Stats:
    """Write CDM CSV files (and ``identity.csv``) for every FHIR file under ``src`` to ``out``."""
    files = source_files(Path(src))
    out.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    writer = _Writer(out, stats)
    with open(out / "identity.csv", "w", newline="", encoding="utf-8") as ident:
        identity = csv.writer(ident)
        identity.writerow(["person_id", "national_id"])
        try:
            for done, path in enumerate(files, start=1):
                _convert_file(path, writer, stats, network_key, identity)
                stats.files = done
                if progress is not None:
                    progress("FHIR files", done, len(files))
                    seen = sum(stats.resources.values())
                    progress("FHIR resources", seen, seen)
        finally:
            writer.close()
    if not stats.rows.get("person"):
        raise IngestError(f"no Patient resource in the FHIR files under {src}")
    if not stats.persons_with_national_id:
        (out / "identity.csv").unlink()
    return stats


def _convert_file(path: Path, writer: _Writer, stats: Stats, key: bytes | None,
                  identity: Any) -> None:
    mapper = _Mapper(writer, stats, key, identity)
    found = list(resources(path))  # one file's resources: its references resolve
    for resource, full_url in found:
        if full_url and resource.get("id"):
            mapper.refs.full_urls[full_url] = (str(resource["resourceType"]),
                                               str(resource["id"]))
    adjudicated = {mapper.refs.key(r.get("claim"), "Claim") for r, _ in found
                   if r.get("resourceType") == "ExplanationOfBenefit"}
    for resource, _ in found:
        kind = str(resource.get("resourceType"))
        stats.resources[kind] = stats.resources.get(kind, 0) + 1
        if kind == "ExplanationOfBenefit" or (kind == "Claim" and
                                               str(resource.get("id")) not in adjudicated):
            mapper.cost(resource)
        elif kind in HANDLERS:
            HANDLERS[kind](mapper, resource)

