"""Study files: ``{analysis, params, cohort | cohort_path, purpose, nodes}`` in JSON or YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from healthspace.core.documents import parse_text
from healthspace.core.errors import InvalidInput, invalid_from_validation
from healthspace.core.models import StudySpec


def read_document(path: Path, what: str = "file") -> dict[str, Any]:
    """Parse a JSON or YAML mapping from a file, naming the file in every error."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{what} {path} does not exist", field=what)
    data = parse_text(path.read_text(encoding="utf-8"), what)
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} must contain a mapping (an object)", field=what)
    return data


def load_study_file(path: Path) -> StudySpec:
    """Read a study file; ``cohort_path`` is resolved relative to the study file and inlined."""
    data = read_document(path, "study")
    if "cohort_path" in data:
        if data.get("cohort") is not None:
            raise InvalidInput("give either cohort or cohort_path, not both", field="cohort_path")
        cohort_file = Path(str(data.pop("cohort_path")))
        if not cohort_file.is_absolute():
            cohort_file = Path(path).parent / cohort_file
        data["cohort"] = read_document(cohort_file, "cohort_path")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc
