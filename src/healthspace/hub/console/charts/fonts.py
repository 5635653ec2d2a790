"""Fonts for the console's charts: DejaVu Sans (matplotlib's own) for Latin text, and the
first installed font that draws Simplified Chinese as its fallback (on Debian
``fonts-wqy-microhei``, which ``make browser`` installs)."""

from __future__ import annotations

import contextlib
import threading
from functools import cache
from typing import Any

_FONT_LOCK = threading.Lock()
LATIN = "DejaVu Sans"  # matplotlib's own font: always there
# Fonts with Simplified Chinese glyphs, best first (Debian/Ubuntu packages, then macOS and
# Windows names): the first one installed is the fallback for glyphs DejaVu Sans lacks.
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
                "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback",
                "AR PL UMing CN", "PingFang SC", "Microsoft YaHei", "SimHei")
NEEDS_CJK = frozenset({"zh"})
_PROBE = "中文图表生存风险比训练校准"  # a font must draw these to count


@cache
def cjk_font() -> str | None:
    """The family of an installed font that draws Simplified Chinese, or None."""
    from matplotlib import font_manager

    with _FONT_LOCK:  # two first requests at once: the second finds what the first added
        found = _cjk_among(font_manager.fontManager)
        if found is None:
            # matplotlib keeps its font list in a cache file: a font installed after the
            # cache was written (apt-get after a first run) is not in it until it is added.
            known = {entry.fname for entry in font_manager.fontManager.ttflist}
            for path in font_manager.findSystemFonts():
                if path not in known:
                    with contextlib.suppress(OSError, RuntimeError, ValueError):
                        font_manager.fontManager.addfont(path)
            found = _cjk_among(font_manager.fontManager)
        return found


def _cjk_among(manager: Any) -> str | None:
    from matplotlib.ft2font import FT2Font

    paths = {entry.name: entry.fname for entry in manager.ttflist}
    for family in CJK_FAMILIES:
        if family in paths:
            try:
                font = FT2Font(paths[family])
            except (OSError, RuntimeError):
                continue
            if all(font.get_char_index(ord(char)) for char in _PROBE):
                return family
    return None


def font_family() -> list[str]:
    """DejaVu Sans, then the CJK font if there is one: for Chinese text, and for names in a
    result that are Chinese whatever the viewer's language."""
    cjk = cjk_font()
    return [LATIN, *([cjk] if cjk else [])]
