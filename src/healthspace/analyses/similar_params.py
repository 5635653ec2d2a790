"""Parameters of the similar-patient lookup: the profile, the similarity spec, treatments, outcomes.

A profile describes one patient without identifiers: age, sex, diagnosis codes, recent lab
values and current drugs. Codes are ``VOCAB:CODE`` as in cohort definitions; the similarity
spec compares diagnosis and drug codes at a prefix level (ICD-10 category ``E11``, ATC
chemical subgroup ``A10BA``) so that near-identical codes count as the same. See
docs/similar-patients.md for the distance and the disclosure rules.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from healthspace.analyses.base import Params
from healthspace.cohort.models import _check_code

MAX_LABS = 20
MAX_CODES = 200
MAX_TREATMENTS = 12
MAX_OUTCOMES = 8
MAX_K = 5000
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ .\-]{0,39}$")
AGE = "age"
SETS: tuple[Literal["conditions", "drugs"], ...] = ("conditions", "drugs")


def _name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(f"name {value!r} must be 1-40 letters, digits, space, _ . -, "
                         f"starting with a letter")
    return value


def _plain_codes(codes: list[str]) -> list[str]:
    """Profile codes are exact codes: a wildcard describes many patients, not this one."""
    for code in codes:
        _check_code(code)
        if "%" in code:
            raise ValueError(f"profile code {code!r} must not contain a % wildcard")
    if len(set(codes)) != len(codes):
        raise ValueError("codes must not repeat")
    return codes


class Profile(Params):
    """The patient at hand. ``labs`` maps a measurement code to its most recent value."""

    age: float = Field(ge=0, le=130, allow_inf_nan=False)
    sex: Literal["F", "M"] | None = None
    conditions: list[str] = Field(default_factory=list, max_length=MAX_CODES)
    labs: dict[str, float] = Field(default_factory=dict, max_length=MAX_LABS)
    drugs: list[str] = Field(default_factory=list, max_length=MAX_CODES)

    @field_validator("conditions", "drugs")
    @classmethod
    def _codes(cls, codes: list[str]) -> list[str]:
        return _plain_codes(codes)

    @field_validator("labs")
    @classmethod
    def _labs(cls, labs: dict[str, float]) -> dict[str, float]:
        _plain_codes(list(labs))
        for code, value in labs.items():
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"lab value of {code} must be finite")
        return labs


class Similarity(Params):
    """How patients are compared (docs/similar-patients.md).

    ``numeric`` weights ``age`` and lab codes in a standardised Euclidean distance (the
    standardisation is the network's mean and SD, federated first); ``sets`` weights the
    Jaccard distance of the diagnosis and drug code sets. Unset: age and every profile lab
    weigh 1, both code sets weigh 1. A candidate lacking a weighted lab contributes
    ``missing_penalty`` standard deviations for it.
    """

    numeric: dict[str, float] | None = Field(default=None, max_length=MAX_LABS + 1)
    sets: dict[Literal["conditions", "drugs"], float] | None = None
    condition_prefix: int | None = Field(default=3, ge=1, le=20,
                                         description="code characters compared; null: all")
    drug_prefix: int | None = Field(default=5, ge=1, le=20)
    lookback_days: int = Field(default=365, ge=1, le=3650,
                               description="labs and drugs count when recorded this many days "
                                           "before the index date (or on it)")
    missing_penalty: float = Field(default=1.0, ge=0, le=10, allow_inf_nan=False)
    sex_weight: float = Field(default=1.0, ge=0, le=100, allow_inf_nan=False,
                              description="weight of a sex mismatch (0/1) when the profile "
                                          "gives a sex")

    @field_validator("numeric")
    @classmethod
    def _numeric(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is None:
            return None
        for key, weight in weights.items():
            if key != AGE:
                _plain_codes([key])
            if not 0 <= weight <= 100:
                raise ValueError(f"weight of {key} must be between 0 and 100")
        return weights

    @field_validator("sets")
    @classmethod
    def _sets(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        for key, weight in (weights or {}).items():
            if not 0 <= weight <= 100:
                raise ValueError(f"weight of {key} must be between 0 and 100")
        return weights


class _Coded(Params):
    """A named set of event codes (``VOCAB:CODE``, ``%`` wildcards allowed)."""

    name: str
    codes: list[str] = Field(default_factory=list, max_length=MAX_CODES)

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        return _name(name)

    @field_validator("codes")
    @classmethod
    def _codes(cls, codes: list[str]) -> list[str]:
        return [_check_code(c) for c in codes]


class Treatment(_Coded):
    """A candidate treatment: any of ``codes`` (drug or procedure, ``%`` wildcards) started
    within ``window_days`` after the index date (day 0 included)."""

    codes: list[str] = Field(min_length=1, max_length=MAX_CODES)
    window_days: int = Field(default=90, ge=0, le=3650)


class Outcome(_Coded):
    """An outcome after the index date: a condition among ``codes``, or ``death``, within
    ``horizon_days`` (an event on the index date itself does not count)."""

    death: bool = False
    horizon_days: int = Field(default=365, ge=1, le=3650)

    @model_validator(mode="after")
    def _something(self) -> Outcome:
        if not self.codes and not self.death:
            raise ValueError("an outcome needs codes, death: true, or both")
        return self


class SimilarParams(Params):
    """``similar_patients``: the k most similar patients per node and what happened to them."""

    profile: Profile
    similarity: Similarity = Field(default_factory=Similarity)
    k: int = Field(default=200, ge=10, le=MAX_K, description="similar patients per node")
    treatments: list[Treatment] = Field(default_factory=list, max_length=MAX_TREATMENTS)
    outcomes: list[Outcome] = Field(min_length=1, max_length=MAX_OUTCOMES)
    km_outcome: str | None = Field(default=None, description="the outcome whose Kaplan–Meier "
                                   "curve is drawn per treatment; default the first")

    @model_validator(mode="after")
    def _names(self) -> SimilarParams:
        for label, items in (("treatments", self.treatments), ("outcomes", self.outcomes)):
            names = [item.name for item in items]
            if len(set(names)) != len(names):
                raise ValueError(f"{label} names must not repeat")
        if self.km_outcome is not None and self.km_outcome not in {
                o.name for o in self.outcomes}:
            raise ValueError(f"km_outcome {self.km_outcome!r} is not one of the outcomes")
        missing = [key for key in self.numeric_weights()
                   if key != AGE and key not in self.profile.labs]
        if missing:
            raise ValueError(f"similarity.numeric weighs {', '.join(missing)}, which the "
                             f"profile's labs lack")
        if not self.numeric_weights() and not self.set_weights():
            raise ValueError("the similarity spec weighs nothing: give a positive weight")
        return self

    def numeric_weights(self) -> dict[str, float]:
        """Feature -> weight (> 0): the spec's, else age and every profile lab at 1."""
        if self.similarity.numeric is not None:
            weights = self.similarity.numeric
        else:
            weights = {AGE: 1.0, **dict.fromkeys(self.profile.labs, 1.0)}
        return {key: float(w) for key, w in weights.items() if w > 0}

    def set_weights(self) -> dict[str, float]:
        weights = self.similarity.sets
        if weights is None:
            weights = dict.fromkeys(SETS, 1.0)
        return {key: float(w) for key, w in weights.items() if w > 0}

    def km_name(self) -> str:
        return self.km_outcome or self.outcomes[0].name
