"""Consent tiers and purpose lists: the full truth table, records, and the consent CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

import pytest
from pydantic import ValidationError

from healthspace.core.errors import IngestError
from healthspace.governance.consent import (
    RESEARCH_ONLY_PURPOSES,
    ConsentRecord,
    parse_purposes,
    permits,
    read_consent_csv,
    record_permits,
)
from healthspace.governance.policy import ConsentTier, Purpose

TIER_ALLOWS = {
    ConsentTier.OPEN: set(Purpose),
    ConsentTier.RESEARCH_ONLY: {Purpose.RESEARCH, Purpose.PUBLIC_HEALTH},
    ConsentTier.WITHHELD: set(),
}
# None (no list), the empty list, every single purpose, every pair and the full list
PURPOSE_LISTS: list[list[Purpose] | None] = [
    None, [], *([p] for p in Purpose), *(list(c) for c in combinations(Purpose, 2)), list(Purpose)
]


def test_research_only_purposes() -> None:
    assert TIER_ALLOWS[ConsentTier.RESEARCH_ONLY] == RESEARCH_ONLY_PURPOSES


@pytest.mark.parametrize("tier", list(ConsentTier))
@pytest.mark.parametrize("purposes", PURPOSE_LISTS, ids=repr)
def test_permits_truth_table(tier: ConsentTier, purposes: list[Purpose] | None) -> None:
    for purpose in Purpose:
        expected = purpose in TIER_ALLOWS[tier] and (purposes is None or purpose in purposes)
        # A research-only patient may opt in to clinical care by naming it.
        expected = expected or (tier == ConsentTier.RESEARCH_ONLY
                                and purpose == Purpose.CLINICAL_CARE
                                and purposes is not None and purpose in purposes)
        assert permits(tier, purposes, purpose) is expected, purpose
        # plain strings behave exactly like the enums
        as_text = None if purposes is None else [str(p) for p in purposes]
        assert permits(str(tier), as_text, str(purpose)) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("tier", list(ConsentTier))
def test_unknown_purpose_is_never_permitted(tier: ConsentTier) -> None:
    assert not permits(tier, None, "marketing")
    assert not permits(tier, ["marketing"], "marketing")


def test_list_cannot_widen_the_tier() -> None:
    assert not permits(ConsentTier.RESEARCH_ONLY, ["drug_development"], "drug_development")
    assert not permits(ConsentTier.WITHHELD, list(Purpose), "research")
    assert not permits(ConsentTier.RESEARCH_ONLY, None, "clinical_care")
    assert permits(ConsentTier.RESEARCH_ONLY, ["research", "clinical_care"], "clinical_care")


def test_record_permits_uses_the_default_tier_without_a_record() -> None:
    assert record_permits(None, ConsentTier.OPEN, "drug_development")  # opt-out regime
    assert not record_permits(None, ConsentTier.WITHHELD, "research")  # opt-in regime
    assert not record_permits(None, ConsentTier.RESEARCH_ONLY, "payer_policy")
    rec = ConsentRecord(person_id=1, tier=ConsentTier.OPEN, purposes=[Purpose.RESEARCH])
    assert record_permits(rec, ConsentTier.WITHHELD, "research")
    assert not record_permits(rec, ConsentTier.OPEN, "public_health")


def test_record_needs_exactly_one_key() -> None:
    ConsentRecord(person_source_value="abc", tier="open")  # type: ignore[arg-type]
    ConsentRecord(person_id=7, tier="withheld")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="exactly one"):
        ConsentRecord(tier="open")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="exactly one"):
        ConsentRecord(person_source_value="abc", person_id=7, tier="open")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ConsentRecord(person_id=7, tier="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ConsentRecord(person_id=7, tier="open", purposes=["marketing"])  # type: ignore[arg-type,list-item]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        (";;", None),
        ("research", [Purpose.RESEARCH]),
        ("research;public_health", [Purpose.RESEARCH, Purpose.PUBLIC_HEALTH]),
        (" research ; ; Public_Health ;", [Purpose.RESEARCH, Purpose.PUBLIC_HEALTH]),
        ("research;research", [Purpose.RESEARCH]),
    ],
)
def test_parse_purposes(text: str | None, expected: list[Purpose] | None) -> None:
    assert parse_purposes(text) == expected


def test_parse_purposes_names_the_unknown_one() -> None:
    with pytest.raises(ValueError, match="'marketing'"):
        parse_purposes("research;marketing")


def write(tmp_path: Path, text: str, name: str = "consent.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_by_pseudonym(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffPerson_Source_Value,Tier,Purposes,Updated_At\n"
                 "aa11,open,,2025-01-02T03:04:05Z\n"
                 "bb22,research_only,research,2025-01-02\n"
                 "cc33,WITHHELD,,\n"
                 "dd44,open,research;drug_development,2025-01-02T11:00:00+08:00\n")
    recs = read_consent_csv(path)
    assert [r.person_source_value for r in recs] == ["aa11", "bb22", "cc33", "dd44"]
    assert [r.tier for r in recs] == [ConsentTier.OPEN, ConsentTier.RESEARCH_ONLY,
                                     ConsentTier.WITHHELD, ConsentTier.OPEN]
    assert recs[0].purposes is None and recs[0].updated_at == datetime(2025, 1, 2, 3, 4, 5,
                                                                        tzinfo=UTC)
    assert recs[1].purposes == [Purpose.RESEARCH]
    assert recs[1].updated_at == datetime(2025, 1, 2, tzinfo=UTC)
    assert recs[2].updated_at is None
    assert recs[3].updated_at == datetime(2025, 1, 2, 3, tzinfo=UTC)
    assert recs[3].permits("drug_development") and not recs[3].permits("public_health")


def test_read_by_person_id_without_optional_columns(tmp_path: Path) -> None:
    recs = read_consent_csv(write(tmp_path, "tier,person_id\nopen,1\nwithheld,2\n"))
    assert [(r.person_id, r.tier, r.purposes) for r in recs] == [
        (1, ConsentTier.OPEN, None), (2, ConsentTier.WITHHELD, None)]
    assert read_consent_csv(write(tmp_path, "person_id,tier\n", "empty.csv")) == []


@pytest.mark.parametrize(
    ("text", "row", "column", "words"),
    [
        ("person_id,tier\n1,open\nx,open\n", 2, "person_id", "not an integer"),
        ("person_id,tier\n1,open\n,open\n", 2, "person_id", "empty"),
        ("person_source_value,tier\na,open\nb,sometimes\n", 2, "tier", "sometimes"),
        ("person_source_value,tier\na,\n", 1, "tier", "unknown tier"),
        ("person_id,tier,purposes\n1,open,research;marketing\n", 1, "purposes", "marketing"),
        ("person_id,tier,updated_at\n1,open,yesterday\n", 1, "updated_at", "yesterday"),
        ("person_id,tier\n1,open\n2,open\n1,withheld\n", 3, "person_id", "duplicate"),
        ("person_source_value,tier\na,open\nA,open\na,open\n", 3, "person_source_value",
         "first on row 1"),
        ("person_id,tier\n1,open,extra\n", 1, None, "more values"),
        ("person_id,tier,purpose\n1,open,research\n", None, "purpose", "unknown column"),
        ("person_id,tier,Tier\n1,open,open\n", None, "Tier", "twice"),
        ("person_id,person_source_value,tier\n1,a,open\n", None,
         "person_source_value / person_id", "exactly one"),
        ("tier\nopen\n", None, None, "exactly one"),
        ("person_id\n1\n", None, "tier", "missing column"),
        ("", None, None, "empty"),
    ],
)
def test_csv_errors_name_row_and_column(
    tmp_path: Path, text: str, row: int | None, column: str | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(IngestError) as info:
        read_consent_csv(path)
    err = info.value
    assert (err.file, err.row, err.column) == (str(path), row, column)
    assert words in err.message


def test_cells_are_trimmed(tmp_path: Path) -> None:
    recs = read_consent_csv(write(tmp_path, " person_source_value , tier \n a , open \n"))
    assert (recs[0].person_source_value, recs[0].tier) == ("a", ConsentTier.OPEN)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read") as info:
        read_consent_csv(tmp_path / "nope.csv")
    assert info.value.file == str(tmp_path / "nope.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("person_source_value,tier\nJos\xe9,open\n".encode("latin-1"))
    with pytest.raises(IngestError, match="UTF-8"):
        read_consent_csv(bad)
