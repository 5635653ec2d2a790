"""Study files: ``{analysis, params, cohort | cohort_path, dataset | dataset_path, purpose,
nodes}`` in JSON or YAML."""

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


def inline_paths(data: dict[str, Any], path: Path,
                 keys: tuple[str, ...] = ("cohort", "dataset")) -> dict[str, Any]:
    """Replace ``cohort_path`` / ``dataset_path`` (of ``keys``) in a file's mapping by the
    documents they name, read relative to the file ``path``; a key and its path is an error."""
    for key in keys:
        ref = f"{key}_path"
        if ref not in data:
            continue
        if data.get(key) is not None:
            raise InvalidInput(f"give either {key} or {ref}, not both", field=ref)
        target = Path(str(data.pop(ref)))
        if not target.is_absolute():
            target = Path(path).parent / target
        data[key] = read_document(target, ref)
    return data


def load_study_file(path: Path) -> StudySpec:
    """Read a study file; ``cohort_path`` and ``dataset_path`` are resolved relative to the
    study file and inlined."""
    data = inline_paths(read_document(path, "study"), path)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from exc
