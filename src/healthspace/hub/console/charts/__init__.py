"""Charts of released study results for the console: matplotlib figures as SVG or PNG bytes,
drawn in the viewer's language.

Drawn from the result a viewer may already read, never from rows. Every text a figure draws
goes through the viewer's :class:`~healthspace.hub.console.i18n.Translator` (numbers through
its ``number``). Chinese needs a CJK font: one is looked up once among the machine's fonts
(on Debian ``fonts-wqy-microhei``, which ``make browser`` installs) and set as matplotlib's
fallback after DejaVu Sans, so Latin text keeps its look; without one a Chinese viewer gets
the English figure rather than boxes for missing glyphs. The SVG is rewritten to carry
presentation attributes instead of ``style`` attributes and ``<style>`` elements, so it
renders under the console's strict Content-Security-Policy; it keeps matplotlib's comments
(each drawn text, in words) and gets a ``<title>``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

from healthspace.hub.console.charts import fonts
from healthspace.hub.console.charts.figures import BUILDERS, Chart, Result, no_charts, roc_points
from healthspace.hub.console.charts.fonts import CJK_FAMILIES, LATIN, NEEDS_CJK
from healthspace.hub.console.charts.svg import clean_svg
from healthspace.hub.console.i18n import DEFAULT, Translator

__all__ = ["CJK_FAMILIES", "FORMATS", "LATIN", "Chart", "charts_for", "clean_svg",
           "drawing_translator", "render", "roc_points"]

FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
_LOCK = threading.Lock()
CACHED = 64
_DRAWN: OrderedDict[str, bytes] = OrderedDict()


def charts_for(analysis: str, result: Result, params: Result) -> list[Chart]:
    return [chart for chart, _ in BUILDERS.get(analysis, no_charts)(result, params,
                                                                 Translator(DEFAULT))]


def drawing_translator(t: Translator) -> Translator:
    """The translator a chart is drawn with: the viewer's, or English when the viewer's
    language needs a font this machine does not have."""
    if t.lang in NEEDS_CJK and fonts.cjk_font() is None:
        return Translator(DEFAULT)
    return t


def render(analysis: str, result: Result, params: Result, name: str, fmt: str,
           t: Translator | None = None) -> bytes:
    """The chart ``name`` as ``fmt`` bytes, its text in ``t``'s language (English if none, or
    if that language's font is missing); LookupError if the result has no such chart.

    A released result never changes, so drawings are kept (a few dozen, by content digest
    and language) for the next view of the same page.
    """
    t = drawing_translator(t or Translator(DEFAULT))
    key = hashlib.sha256(json.dumps([analysis, result, params, name, fmt, t.lang],
                                    sort_keys=True, default=str).encode()).hexdigest()
    with _LOCK:
        if key in _DRAWN:
            _DRAWN.move_to_end(key)
            return _DRAWN[key]
    for chart, produce in BUILDERS.get(analysis, no_charts)(result, params, t):
        if chart.name == name and fmt in chart.formats:
            import matplotlib

            # rcParams are global: these hold only while this figure is drawn (text as paths,
            # so viewing the SVG needs no font)
            with _LOCK, matplotlib.rc_context({"font.family": fonts.font_family(),
                                               "svg.fonttype": "path"}):
                body = _DRAWN[key] = produce(fmt, t(chart.title))
                while len(_DRAWN) > CACHED:
                    _DRAWN.popitem(last=False)
            return body
    raise LookupError(f"no chart {name}.{fmt}")
