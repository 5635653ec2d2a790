"""The fixed code list of the synthetic network and its ``concept`` table.

Source codes (ICD-10, ATC, LOINC, ICD-10-PCS) get synthetic concept ids
``CONCEPT_ID_BASE + position`` in :data:`CODES`. The list is append-only: a code keeps its id
across releases and sites, so concept ids can be compared between nodes. Generated rows put the
same id in ``*_concept_id`` and ``*_source_concept_id`` (our synthetic vocabulary is its own
standard), so every listed concept is marked standard (``S``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from healthspace.cdm.schema import GENDER_CONCEPTS, VISIT_CONCEPTS

CONCEPT_ID_BASE = 2_000_000_000

# OMOP "Type Concept" vocabulary: where a record came from.
TYPE_EHR = 32817
TYPE_CLAIM = 32810

_CLASS = {
    "ICD10": ("Condition", "ICD10 code"),
    "ATC": ("Drug", "ATC 5th"),
    "LOINC": ("Measurement", "Lab Test"),
    "ICD10PCS": ("Procedure", "ICD10PCS"),
}

# (vocabulary_id, concept_code, concept_name). Append only; never reorder (ids are positions).
# Names carry no commas or quotes so the CSVs never need quoting.
CODES: tuple[tuple[str, str, str], ...] = (
    ("ICD10", "E11.9", "Type 2 diabetes mellitus without complications"),
    ("ICD10", "E11.21", "Type 2 diabetes mellitus with diabetic nephropathy"),
    ("ICD10", "E11.22", "Type 2 diabetes mellitus with diabetic chronic kidney disease"),
    ("ICD10", "R73.9", "Hyperglycaemia unspecified"),
    ("ICD10", "I10", "Essential (primary) hypertension"),
    ("ICD10", "N18.3", "Chronic kidney disease stage 3"),
    ("ICD10", "N18.4", "Chronic kidney disease stage 4"),
    ("ICD10", "N18.5", "Chronic kidney disease stage 5"),
    ("ICD10", "I50.0", "Congestive heart failure"),
    ("ICD10", "I50.9", "Heart failure unspecified"),
    ("ICD10", "I21.0", "Acute transmural myocardial infarction of anterior wall"),
    ("ICD10", "I21.4", "Acute subendocardial myocardial infarction"),
    ("ICD10", "I21.9", "Acute myocardial infarction unspecified"),
    ("ICD10", "I25.2", "Old myocardial infarction"),
    ("ICD10", "C34.1", "Malignant neoplasm of upper lobe bronchus or lung"),
    ("ICD10", "C34.3", "Malignant neoplasm of lower lobe bronchus or lung"),
    ("ICD10", "C34.9", "Malignant neoplasm of bronchus or lung unspecified"),
    ("ICD10", "K92.2", "Gastrointestinal haemorrhage unspecified"),
    ("ICD10", "J18.0", "Bronchopneumonia unspecified"),
    ("ICD10", "J18.1", "Lobar pneumonia unspecified"),
    ("ICD10", "J18.9", "Pneumonia unspecified"),
    ("ICD10", "J06.9", "Acute upper respiratory infection unspecified"),
    ("ICD10", "M54.5", "Low back pain"),
    ("ICD10", "M17.9", "Gonarthrosis unspecified"),
    ("ICD10", "K29.7", "Gastritis unspecified"),
    ("ICD10", "R51", "Headache"),
    ("ATC", "A10BA02", "metformin"),
    ("ATC", "A10BB09", "gliclazide"),
    ("ATC", "A10AB01", "insulin (human)"),
    ("ATC", "A10AB05", "insulin aspart"),
    ("ATC", "C10AA01", "simvastatin"),
    ("ATC", "C10AA05", "atorvastatin"),
    ("ATC", "B01AC06", "acetylsalicylic acid"),
    ("ATC", "M01AE01", "ibuprofen"),
    ("ATC", "M01AB05", "diclofenac"),
    ("ATC", "A02BC01", "omeprazole"),
    ("ATC", "A02BC02", "pantoprazole"),
    ("ATC", "B01AA03", "warfarin"),
    ("ATC", "L01XE03", "erlotinib"),
    ("ATC", "L01BA04", "pemetrexed"),
    ("ATC", "C08CA01", "amlodipine"),
    ("ATC", "C09CA01", "losartan"),
    ("ATC", "C03CA01", "furosemide"),
    ("ATC", "J01DD04", "ceftriaxone"),
    ("LOINC", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
    ("LOINC", "33914-3", "Glomerular filtration rate/1.73 sq M.predicted by MDRD formula"),
    ("LOINC", "8480-6", "Systolic blood pressure"),
    ("LOINC", "718-7", "Hemoglobin [Mass/volume] in Blood"),
    ("ICD10PCS", "027034Z", "Dilation of coronary artery with drug-eluting stent percutaneous"),
    ("ICD10PCS", "0BTC4ZZ", "Resection of right upper lung lobe percutaneous endoscopic"),
    ("ICD10PCS", "3E03305", "Introduction of antineoplastic into peripheral vein percutaneous"),
    ("ICD10PCS", "5A1D70Z", "Performance of urinary filtration intermittent under 6 hours/day"),
    ("ICD10PCS", "0DJ08ZZ", "Inspection of upper intestinal tract endoscopic"),
    ("ICD10PCS", "BW03ZZZ", "Plain radiography of chest"),
    # Never recorded by a hospital: only injected into payer claims as an upcoded diagnosis.
    ("ICD10", "A41.9", "Sepsis unspecified"),
)

_INDEX = {code: i for i, (_, code, _) in enumerate(CODES)}
CONCEPT_IDS = np.arange(len(CODES), dtype=np.int64) + CONCEPT_ID_BASE + 1
CODE_STRINGS = pa.array([code for _, code, _ in CODES], pa.string())

# Non-source concepts rows point at: (id, name, domain = vocabulary = class, code).
_FIXED: tuple[tuple[int, str, str, str], ...] = (
    (VISIT_CONCEPTS["IP"], "Inpatient Visit", "Visit", "IP"),
    (VISIT_CONCEPTS["OP"], "Outpatient Visit", "Visit", "OP"),
    (VISIT_CONCEPTS["ER"], "Emergency Room Visit", "Visit", "ER"),
    (GENDER_CONCEPTS["F"], "FEMALE", "Gender", "F"),
    (GENDER_CONCEPTS["M"], "MALE", "Gender", "M"),
    (TYPE_EHR, "EHR", "Type Concept", "EHR"),
    (TYPE_CLAIM, "Claim", "Type Concept", "Claim"),
)


def ix(code: str) -> int:
    """Position of a source code in :data:`CODES` (raises KeyError for unknown codes)."""
    return _INDEX[code]


def concept_id(code: str) -> int:
    """Synthetic concept id of a source code; the same at every site."""
    return int(CONCEPT_IDS[_INDEX[code]])


def concept_rows(exclude_vocabularies: frozenset[str] = frozenset()) -> dict[str, list[object]]:
    """Columns of ``concept.csv``: every code of the network plus visit, gender and type rows."""
    names = ["concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id",
             "standard_concept", "concept_code"]
    cols: dict[str, list[object]] = {k: [] for k in names}

    def add(cid: int, name: str, domain: str, vocab: str, cls: str, code: str) -> None:
        for key, value in zip(cols, (cid, name, domain, vocab, cls, "S", code), strict=True):
            cols[key].append(value)

    for cid, name, vocab, code in _FIXED:
        add(cid, name, vocab, vocab, vocab, code)
    for i, (vocab, code, name) in enumerate(CODES):
        if vocab in exclude_vocabularies:
            continue
        domain, cls = _CLASS[vocab]
        if code == "8480-6":
            cls = "Clinical Observation"  # LOINC's class for vital signs
        add(int(CONCEPT_IDS[i]), name, domain, vocab, cls, code)
    return cols
