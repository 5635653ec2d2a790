"""The OMOP CDM v5.4 subset a node store holds, with v5.3 column renames.

Every ``*_id`` column is a signed 64-bit integer (real exports carry negative and very large
ids). Payer settlement fields use the standard ``cost`` columns: ``total_charge`` (total),
``paid_by_payer`` (fund-paid, 统筹支付), ``paid_by_patient`` (self-paid, 自付), and
``drg_source_value`` for the DRG/DIP group.
"""

from __future__ import annotations

from dataclasses import dataclass

CDM_VERSION = "5.4"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB type: BIGINT, INTEGER, DOUBLE, DATE, TIMESTAMP, VARCHAR
    required: bool = False


def _cols(spec: str) -> tuple[Column, ...]:
    """Parse ``name:TYPE[!]`` tokens; ``!`` marks NOT NULL."""
    out = []
    for token in spec.split():
        name, _, typ = token.partition(":")
        required = typ.endswith("!")
        out.append(Column(name, typ.rstrip("!"), required))
    return tuple(out)


TABLES: dict[str, tuple[Column, ...]] = {
    "person": _cols(
        "person_id:BIGINT! gender_concept_id:BIGINT year_of_birth:INTEGER! month_of_birth:INTEGER "
        "day_of_birth:INTEGER birth_datetime:TIMESTAMP race_concept_id:BIGINT "
        "ethnicity_concept_id:BIGINT location_id:BIGINT provider_id:BIGINT care_site_id:BIGINT "
        "person_source_value:VARCHAR gender_source_value:VARCHAR gender_source_concept_id:BIGINT "
        "race_source_value:VARCHAR race_source_concept_id:BIGINT ethnicity_source_value:VARCHAR "
        "ethnicity_source_concept_id:BIGINT"
    ),
    "observation_period": _cols(
        "observation_period_id:BIGINT! person_id:BIGINT! observation_period_start_date:DATE! "
        "observation_period_end_date:DATE! period_type_concept_id:BIGINT"
    ),
    "visit_occurrence": _cols(
        "visit_occurrence_id:BIGINT! person_id:BIGINT! visit_concept_id:BIGINT "
        "visit_start_date:DATE! visit_start_datetime:TIMESTAMP visit_end_date:DATE "
        "visit_end_datetime:TIMESTAMP visit_type_concept_id:BIGINT provider_id:BIGINT "
        "care_site_id:BIGINT visit_source_value:VARCHAR visit_source_concept_id:BIGINT "
        "admitted_from_concept_id:BIGINT admitted_from_source_value:VARCHAR "
        "discharged_to_concept_id:BIGINT discharged_to_source_value:VARCHAR "
        "preceding_visit_occurrence_id:BIGINT"
    ),
    "condition_occurrence": _cols(
        "condition_occurrence_id:BIGINT! person_id:BIGINT! condition_concept_id:BIGINT "
        "condition_start_date:DATE! condition_start_datetime:TIMESTAMP condition_end_date:DATE "
        "condition_end_datetime:TIMESTAMP condition_type_concept_id:BIGINT "
        "condition_status_concept_id:BIGINT stop_reason:VARCHAR provider_id:BIGINT "
        "visit_occurrence_id:BIGINT visit_detail_id:BIGINT condition_source_value:VARCHAR "
        "condition_source_concept_id:BIGINT condition_status_source_value:VARCHAR"
    ),
    "drug_exposure": _cols(
        "drug_exposure_id:BIGINT! person_id:BIGINT! drug_concept_id:BIGINT "
        "drug_exposure_start_date:DATE! drug_exposure_start_datetime:TIMESTAMP "
        "drug_exposure_end_date:DATE drug_exposure_end_datetime:TIMESTAMP verbatim_end_date:DATE "
        "drug_type_concept_id:BIGINT stop_reason:VARCHAR refills:INTEGER quantity:DOUBLE "
        "days_supply:INTEGER sig:VARCHAR route_concept_id:BIGINT lot_number:VARCHAR "
        "provider_id:BIGINT visit_occurrence_id:BIGINT visit_detail_id:BIGINT "
        "drug_source_value:VARCHAR drug_source_concept_id:BIGINT route_source_value:VARCHAR "
        "dose_unit_source_value:VARCHAR"
    ),
    "procedure_occurrence": _cols(
        "procedure_occurrence_id:BIGINT! person_id:BIGINT! procedure_concept_id:BIGINT "
        "procedure_date:DATE! procedure_datetime:TIMESTAMP procedure_end_date:DATE "
        "procedure_end_datetime:TIMESTAMP procedure_type_concept_id:BIGINT "
        "modifier_concept_id:BIGINT quantity:INTEGER provider_id:BIGINT "
        "visit_occurrence_id:BIGINT visit_detail_id:BIGINT procedure_source_value:VARCHAR "
        "procedure_source_concept_id:BIGINT modifier_source_value:VARCHAR"
    ),
    "measurement": _cols(
        "measurement_id:BIGINT! person_id:BIGINT! measurement_concept_id:BIGINT "
        "measurement_date:DATE! measurement_datetime:TIMESTAMP measurement_time:VARCHAR "
        "measurement_type_concept_id:BIGINT operator_concept_id:BIGINT value_as_number:DOUBLE "
        "value_as_concept_id:BIGINT unit_concept_id:BIGINT range_low:DOUBLE range_high:DOUBLE "
        "provider_id:BIGINT visit_occurrence_id:BIGINT visit_detail_id:BIGINT "
        "measurement_source_value:VARCHAR measurement_source_concept_id:BIGINT "
        "unit_source_value:VARCHAR unit_source_concept_id:BIGINT value_source_value:VARCHAR "
        "measurement_event_id:BIGINT meas_event_field_concept_id:BIGINT"
    ),
    "death": _cols(
        "person_id:BIGINT! death_date:DATE! death_datetime:TIMESTAMP death_type_concept_id:BIGINT "
        "cause_concept_id:BIGINT cause_source_value:VARCHAR cause_source_concept_id:BIGINT"
    ),
    "cost": _cols(
        "cost_id:BIGINT! cost_event_id:BIGINT! cost_domain_id:VARCHAR cost_type_concept_id:BIGINT "
        "currency_concept_id:BIGINT total_charge:DOUBLE total_cost:DOUBLE total_paid:DOUBLE "
        "paid_by_payer:DOUBLE paid_by_patient:DOUBLE paid_patient_copay:DOUBLE "
        "paid_patient_coinsurance:DOUBLE paid_patient_deductible:DOUBLE paid_by_primary:DOUBLE "
        "paid_ingredient_cost:DOUBLE paid_dispensing_fee:DOUBLE payer_plan_period_id:BIGINT "
        "amount_allowed:DOUBLE revenue_code_concept_id:BIGINT revenue_code_source_value:VARCHAR "
        "drg_concept_id:BIGINT drg_source_value:VARCHAR"
    ),
    "payer_plan_period": _cols(
        "payer_plan_period_id:BIGINT! person_id:BIGINT! payer_plan_period_start_date:DATE! "
        "payer_plan_period_end_date:DATE! payer_concept_id:BIGINT payer_source_value:VARCHAR "
        "payer_source_concept_id:BIGINT plan_concept_id:BIGINT plan_source_value:VARCHAR "
        "plan_source_concept_id:BIGINT sponsor_concept_id:BIGINT sponsor_source_value:VARCHAR "
        "sponsor_source_concept_id:BIGINT family_source_value:VARCHAR "
        "stop_reason_concept_id:BIGINT stop_reason_source_value:VARCHAR "
        "stop_reason_source_concept_id:BIGINT"
    ),
    "location": _cols(
        "location_id:BIGINT! address_1:VARCHAR address_2:VARCHAR city:VARCHAR state:VARCHAR "
        "zip:VARCHAR county:VARCHAR location_source_value:VARCHAR country_concept_id:BIGINT "
        "country_source_value:VARCHAR latitude:DOUBLE longitude:DOUBLE"
    ),
    "care_site": _cols(
        "care_site_id:BIGINT! care_site_name:VARCHAR place_of_service_concept_id:BIGINT "
        "location_id:BIGINT care_site_source_value:VARCHAR place_of_service_source_value:VARCHAR"
    ),
    "concept": _cols(
        "concept_id:BIGINT! concept_name:VARCHAR domain_id:VARCHAR vocabulary_id:VARCHAR! "
        "concept_class_id:VARCHAR standard_concept:VARCHAR concept_code:VARCHAR! "
        "valid_start_date:DATE valid_end_date:DATE invalid_reason:VARCHAR"
    ),
    "concept_ancestor": _cols(
        "ancestor_concept_id:BIGINT! descendant_concept_id:BIGINT! "
        "min_levels_of_separation:INTEGER max_levels_of_separation:INTEGER"
    ),
}

# CDM v5.3 -> v5.4 column renames, applied on ingest: table -> {old: new}.
V53_RENAMES: dict[str, dict[str, str]] = {
    # The v5.3 specification itself misspells this column.
    "cost": {"reveue_code_source_value": "revenue_code_source_value"},
    "visit_occurrence": {
        "admitting_source_concept_id": "admitted_from_concept_id",
        "admitting_source_value": "admitted_from_source_value",
        "discharge_to_concept_id": "discharged_to_concept_id",
        "discharge_to_source_value": "discharged_to_source_value",
    },
    "visit_detail": {
        "admitting_source_concept_id": "admitted_from_concept_id",
        "admitting_source_value": "admitted_from_source_value",
        "discharge_to_concept_id": "discharged_to_concept_id",
        "discharge_to_source_value": "discharged_to_source_value",
    },
}

# Person-level tables whose rows should reference an existing person (ingest reports orphans).
PERSON_TABLES = (
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "death",
    "payer_plan_period",
)

# Clinical domains a cohort criterion can address: table, concept column, source concept
# column, event start date column, value column (measurement only).
DOMAINS: dict[str, tuple[str, str, str, str]] = {
    "condition": (
        "condition_occurrence",
        "condition_concept_id",
        "condition_source_concept_id",
        "condition_start_date",
    ),
    "drug": (
        "drug_exposure",
        "drug_concept_id",
        "drug_source_concept_id",
        "drug_exposure_start_date",
    ),
    "procedure": (
        "procedure_occurrence",
        "procedure_concept_id",
        "procedure_source_concept_id",
        "procedure_date",
    ),
    "measurement": (
        "measurement",
        "measurement_concept_id",
        "measurement_source_concept_id",
        "measurement_date",
    ),
    "visit": (
        "visit_occurrence",
        "visit_concept_id",
        "visit_source_concept_id",
        "visit_start_date",
    ),
}

GENDER_CONCEPTS = {"F": 8532, "M": 8507}

# Standard OMOP visit concepts (vocabulary "Visit").
VISIT_CONCEPTS = {"IP": 9201, "OP": 9202, "ER": 9203}


def ddl(table: str) -> str:
    """CREATE TABLE statement for one table of the subset (DuckDB dialect)."""
    cols = ",\n  ".join(
        f"{c.name} {c.type}{' NOT NULL' if c.required else ''}" for c in TABLES[table]
    )
    return f"CREATE TABLE {table} (\n  {cols}\n)"


def column_names(table: str) -> list[str]:
    return [c.name for c in TABLES[table]]
