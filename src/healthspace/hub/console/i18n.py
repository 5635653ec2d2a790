"""The console's languages: English (the source strings) and Simplified Chinese (简体中文).

Translations live in gettext PO files under ``locale/<lang>/`` — several files per language
are merged, one per area of the console — and are read with Babel at first use. Dates and
numbers are formatted with Babel's CLDR data for the language.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = {"en": "English", "zh": "简体中文"}
DEFAULT = "en"
_CLDR = {"en": "en_GB", "zh": "zh_Hans_CN"}


@cache
def catalog(lang: str) -> dict[str, str]:
    """msgid → msgstr of every PO file for ``lang`` (empty for English)."""
    messages: dict[str, str] = {}
    folder = LOCALE_DIR / lang
    for path in sorted(folder.glob("*.po")) if folder.is_dir() else []:
        with open(path, "rb") as handle:
            for message in read_po(handle, locale=_CLDR[lang]):
                if message.id and message.string and isinstance(message.id, str):
                    messages[message.id] = str(message.string)
    return messages


def pick(requested: str | None, accept_language: str | None) -> str:
    """A query/cookie choice if known, else the first known language the browser accepts."""
    if requested in LANGUAGES:
        return str(requested)
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag[:2] in LANGUAGES:
            return tag[:2]
    return DEFAULT


class Translator:
    """``_("text", **values)`` in templates and pages: the translation, then ``format``."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT
        self.locale = Locale.parse(_CLDR[self.lang])
        self._messages = catalog(self.lang)

    def __call__(self, text: str, **values: Any) -> str:
        out = self._messages.get(text, text)
        return out.format(**values) if values else out

    def number(self, value: Any, digits: int | None = None) -> str:
        if value is None:
            return "–"
        if digits is not None:
            return format_decimal(value, format=f"#,##0.{'0' * digits}" if digits else "#,##0",
                                  locale=self.locale)
        return format_decimal(value, locale=self.locale)

    def when(self, value: datetime | None) -> str:
        return "–" if value is None else format_datetime(value, "medium", locale=self.locale)
