"""JSON or YAML documents given as a mapping, as text, or as the path of a file to read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from healthspace.core.errors import InvalidInput

SUFFIXES = (".json", ".yaml", ".yml")


def looks_like_path(text: str) -> bool:
    """True when ``text`` names an existing file or ends like a document file name."""
    text = text.strip()
    if not text or "\n" in text or text[0] in "{[" or len(text) > 4096:
        return False
    try:
        return text.lower().endswith(SUFFIXES) or Path(text).is_file()
    except OSError:
        return False


def parse_text(text: str, what: str) -> Any:
    """JSON first, then YAML; errors name ``what`` as the field."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    except RecursionError as exc:
        raise InvalidInput(f"the {what} is nested too deeply", field=what) from exc
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise InvalidInput(f"not valid JSON or YAML: {exc}", field=what) from exc


def load_document(source: str | Path | dict[str, Any], what: str) -> Any:
    """The parsed document: a mapping as is, a path read and parsed, other text parsed."""
    if isinstance(source, Path) or (isinstance(source, str) and looks_like_path(source)):
        path = Path(source)
        if not path.is_file():
            raise InvalidInput(f"no such {what} file: {path}", field=what)
        return parse_text(path.read_text(encoding="utf-8"), what)
    if isinstance(source, str):
        return parse_text(source, what)
    return source
