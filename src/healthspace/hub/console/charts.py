"""Charts of released study results for the console: matplotlib figures as SVG or PNG bytes.

Drawn from the result a viewer may already read, never from rows. The SVG is rewritten to
carry presentation attributes instead of ``style`` attributes and ``<style>`` elements, so it
renders under the console's strict Content-Security-Policy. Figures that the package already
draws (the Kaplan–Meier plot of :mod:`healthspace.analyses.plots`, the drug-value cost plot of
:mod:`healthspace.payer.value_report`) are reused as they are, which makes them PNG only.
Text inside the figures stays English (the bundled font has no CJK glyphs); the page's
captions and alt texts are translated.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
BOTH = ("svg", "png")
_LOCK = threading.Lock()
CACHED = 64
_DRAWN: OrderedDict[str, bytes] = OrderedDict()
_SVG = "http://www.w3.org/2000/svg"
# Serialise SVG as SVG is written (default namespace, xlink:) rather than as ns0:, ns1:.
ET.register_namespace("", _SVG)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


@dataclass(frozen=True)
class Chart:
    """One figure of a result: ``title`` and ``alt`` are English msgids the page translates."""

    name: str
    title: str
    alt: str
    formats: tuple[str, ...] = BOTH


Producer = Callable[[str], bytes]
Result = dict[str, Any]


def charts_for(analysis: str, result: Result, params: Result) -> list[Chart]:
    return [chart for chart, _ in _BUILDERS.get(analysis, _none)(result, params)]


def render(analysis: str, result: Result, params: Result, name: str, fmt: str) -> bytes:
    """The chart ``name`` as ``fmt`` bytes; LookupError if the result has no such chart.

    A released result never changes, so drawings are kept (a few dozen, by content digest)
    for the next view of the same page.
    """
    key = hashlib.sha256(json.dumps([analysis, result, params, name, fmt], sort_keys=True,
                                    default=str).encode()).hexdigest()
    with _LOCK:
        if key in _DRAWN:
            _DRAWN.move_to_end(key)
            return _DRAWN[key]
    for chart, produce in _BUILDERS.get(analysis, _none)(result, params):
        if chart.name == name and fmt in chart.formats:
            with _LOCK:  # pyplot (used by the reused figures) keeps global state
                body = _DRAWN[key] = produce(fmt)
                while len(_DRAWN) > CACHED:
                    _DRAWN.popitem(last=False)
            return body
    raise LookupError(f"no chart {name}.{fmt}")


# --- output --------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def _save(draw: Callable[[], Figure]) -> Producer:
    def produce(fmt: str) -> bytes:
        buffer = io.BytesIO()
        draw().savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        return clean_svg(buffer.getvalue()) if fmt == "svg" else buffer.getvalue()
    return produce


def _reuse(write: Callable[[Path], Path]) -> Producer:
    """A package figure that writes its own PNG file."""
    def produce(fmt: str) -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            return write(Path(folder) / "chart.png").read_bytes()
    return produce


def clean_svg(data: bytes) -> bytes:
    """The SVG with every ``style`` attribute and ``<style>`` rule turned into presentation
    attributes (matplotlib's properties are all presentation attributes too), without its
    metadata."""
    root = ET.fromstring(data)  # noqa: S314 - matplotlib's own output, never outside input
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == f"{{{_SVG}}}style":
                for rule in (child.text or "").split("}"):
                    selector, _, body = rule.partition("{")
                    if selector.strip() == "*":
                        _apply(root, body, override=False)
                parent.remove(child)
            elif child.tag == f"{{{_SVG}}}metadata":
                parent.remove(child)
    for element in root.iter():
        style = element.attrib.pop("style", None)
        if style:
            _apply(element, style, override=True)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            + ET.tostring(root, encoding="unicode")).encode()


def _apply(element: ET.Element, declarations: str, override: bool) -> None:
    for item in declarations.split(";"):
        key, _, value = item.partition(":")
        if key.strip() and (override or key.strip() not in element.attrib):
            element.set(key.strip(), value.strip())


# --- figures -------------------------------------------------------------------------------


def _forest(labels: list[str], est: list[float], lo: list[float], hi: list[float], *,
            ref: float, log: bool, xlabel: str, title: str) -> Callable[[], Figure]:
    def draw() -> Figure:
        fig = _figure(6.4, 1.6 + 0.42 * len(labels))
        ax = fig.subplots()
        y = list(range(len(labels)))[::-1]
        ax.errorbar(est, y, xerr=[[e - a for e, a in zip(est, lo, strict=True)],
                                  [b - e for e, b in zip(est, hi, strict=True)]],
                    fmt="o", color="#0b5cad", ecolor="#0b5cad", capsize=3)
        ax.axvline(ref, color="#5b6475", linestyle="--", linewidth=1)
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        if log:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        return fig
    return draw


def _none(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    return []


def _cohort_count(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    sites = result.get("sites") or {}
    if not sites:
        return []

    def draw() -> Figure:
        names = list(sites)
        values = [v if isinstance(v, (int, float)) else 0 for v in sites.values()]
        fig = _figure(6.4, 3.8)
        ax = fig.subplots()
        errors = result.get("intervals")
        bars = ax.bar(names, values, color="#4f81bd",
                      yerr=[errors.get(n, 0) for n in names] if errors else None, capsize=6)
        for bar, value in zip(bars, sites.values(), strict=True):
            if not isinstance(value, (int, float)):
                ax.annotate("withheld" if value is None else str(value),
                            (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom")
        ax.set_ylabel("persons")
        ax.set_title(f"Cohort count per site (total {result.get('total')})")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return fig

    return [(Chart("sites", "Cohort count per site",
                   "Bar chart of the cohort count per site; suppressed counts are marked."),
             _save(draw))]


def _glm(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    import math

    terms = [t for t in result.get("params", {}) if t != "Intercept"]
    if not terms:
        return []
    family = result.get("family", "gaussian")
    log = family in ("binomial", "poisson")
    f: Callable[[float], float] = math.exp if log else float
    est = [f(result["params"][t]) for t in terms]
    lo = [f(result["conf_int"][t][0]) for t in terms]
    hi = [f(result["conf_int"][t][1]) for t in terms]
    label = {"binomial": "odds ratio", "poisson": "rate ratio"}.get(family, "coefficient")
    draw = _forest(terms, est, lo, hi, ref=1.0 if log else 0.0, log=log,
                   xlabel=f"{label} (95 % CI)", title=f"GLM ({family}): {label}s")
    return [(Chart("coefficients", "Coefficients", "Forest plot of the model coefficients "
                   "with 95 % confidence intervals."), _save(draw))]


def _km(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    from healthspace.analyses.plots import plot_km

    if not result.get("timeline") and not result.get("groups"):
        return []
    group = params.get("group")
    return [(Chart("survival", "Survival", "Kaplan–Meier survival curves with 95 % "
                   "confidence bands.", ("png",)),
             _reuse(lambda path: plot_km(result, path, group=group)))]


def _cox(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    import math

    terms = list(result.get("hazard_ratios", {}))
    if not terms:
        return []
    draw = _forest(terms, [result["hazard_ratios"][t] for t in terms],
                   [math.exp(result["conf_int"][t][0]) for t in terms],
                   [math.exp(result["conf_int"][t][1]) for t in terms], ref=1.0, log=True,
                   xlabel="hazard ratio (95 % CI)", title="Cox model: hazard ratios")
    return [(Chart("hazard_ratios", "Hazard ratios", "Forest plot of the hazard ratios with "
                   "95 % confidence intervals."), _save(draw))]


def roc_points(block: Result, events: int | None) -> list[tuple[float, float, float, float]] | None:
    """ROC points ``(fpr, tpr, fpr_halfwidth, tpr_halfwidth)`` at the calibration bins' edges,
    from the released calibration table.

    A suppressed bin hides its counts; the hidden bins' totals are known when the block's
    event total is (``events``). At an edge with hidden bins on both sides the point is only
    known to lie in a rectangle — its centre and half-widths are returned. None when the
    curve cannot be drawn (one class, or hidden bins with unknown totals).
    """
    cells: list[tuple[int, int] | None] = []
    for row in block.get("calibration") or []:
        if row.get("suppressed"):
            cells.append(None)
        elif not row.get("n"):
            cells.append((0, 0))
        else:
            pos = round(row["n"] * row["observed"])
            cells.append((pos, row["n"] - pos))
    hidden = sum(c is None for c in cells)
    known_pos = sum(c[0] for c in cells if c)
    known_neg = sum(c[1] for c in cells if c)
    hidden_pos = hidden_neg = 0
    if hidden:
        if events is None or block.get("n") is None:
            return None
        hidden_pos = events - known_pos
        hidden_neg = int(block["n"]) - known_neg - known_pos - hidden_pos
        if hidden_pos < 0 or hidden_neg < 0:
            return None
    total_pos, total_neg = known_pos + hidden_pos, known_neg + hidden_neg
    if not cells or total_pos == 0 or total_neg == 0:
        return None
    points = [(0.0, 0.0, 0.0, 0.0)]
    tp = fp = above = 0
    for cell in reversed(cells):  # lowering the threshold one bin at a time
        if cell is None:
            above += 1
        else:
            tp, fp = tp + cell[0], fp + cell[1]
        share = 1.0 if above == hidden else 0.0 if above == 0 else 0.5  # 0.5: the midpoint
        span = 0.0 if above in (0, hidden) else 0.5
        points.append(((fp + share * hidden_neg) / total_neg, (tp + share * hidden_pos) / total_pos,
                       span * hidden_neg / total_neg, span * hidden_pos / total_pos))
    return points


def _fl_train(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    out: list[tuple[Chart, Producer]] = []
    rounds = [r for r in result.get("rounds") or [] if r.get("loss") is not None]
    if rounds:
        def training() -> Figure:
            fig = _figure(6.4, 3.8)
            ax = fig.subplots()
            x = [r["round"] for r in rounds]
            ax.plot(x, [r["loss"] for r in rounds], marker="o", color="#c0504d", label="loss")
            if any(r.get("validation_loss") is not None for r in rounds):
                ax.plot(x, [r.get("validation_loss") for r in rounds], marker="o",
                        linestyle="--", color="#c0504d", label="validation loss")
            ax.set_xlabel("round")
            ax.set_ylabel("log loss")
            right = ax.twinx()
            right.plot(x, [r.get("auc") for r in rounds], marker="s", color="#4f81bd",
                       label="AUC")
            right.set_ylabel("AUC")
            lines = ax.get_legend_handles_labels()
            more = right.get_legend_handles_labels()
            ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best")
            ax.set_title("Training per round")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            return fig
        out.append((Chart("training", "Training", "Training loss and AUC per round."),
                    _save(training)))
    population = result.get("population") or {}
    train = result.get("metrics") or {}
    events = population.get("events") if population.get("n_train") == train.get("n") else None
    curves = {"training": (train, roc_points(train, events))}
    if result.get("validation"):
        curves["validation"] = (result["validation"], roc_points(result["validation"], None))
    drawable = {name: (block, pts) for name, (block, pts) in curves.items() if pts}
    if drawable:
        def roc() -> Figure:
            fig = _figure(4.8, 4.6)
            ax = fig.subplots()
            for name, (block, pts) in drawable.items():
                auc = block.get("auc")
                label = f"{name} (AUC {auc:.3f})" if auc is not None else name
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], xerr=[p[2] for p in pts],
                            yerr=[p[3] for p in pts], marker="o", capsize=2, label=label)
            ax.plot([0, 1], [0, 1], color="#5b6475", linestyle="--", linewidth=1)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_title("ROC at the calibration-bin thresholds\n(bars: where suppressed "
                         "bins leave a point)", fontsize=10)
            ax.legend(loc="lower right")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            return fig
        out.append((Chart("roc", "ROC curve", "ROC curve from the released score "
                          "histogram."), _save(roc)))
    shown = {name: [r for r in (block.get("calibration") or []) if r.get("predicted") is not None]
             for name, block in (("training", train), ("validation", result.get("validation")
                                                          or {}))}
    if any(shown.values()):
        def calibration() -> Figure:
            fig = _figure(4.8, 4.6)
            ax = fig.subplots()
            for name, rows in shown.items():
                if rows:
                    ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows],
                            marker="o", label=name)
            ax.plot([0, 1], [0, 1], color="#5b6475", linestyle="--", linewidth=1)
            ax.set_xlabel("mean predicted risk")
            ax.set_ylabel("observed rate")
            ax.set_title("Calibration")
            ax.legend(loc="upper left")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            return fig
        out.append((Chart("calibration", "Calibration", "Calibration plot: mean predicted "
                          "risk against the observed rate per bin."), _save(calibration)))
    return out


def _fraud_screen(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    rows = [r for r in result.get("upcoding") or [] if r.get("ratio") and r.get("ci")]
    if not rows:
        return []
    draw = _forest([r["hospital"] for r in rows], [r["ratio"] for r in rows],
                   [max(r["ci"][0], 1e-3) for r in rows], [r["ci"][1] for r in rows], ref=1.0,
                   log=True, xlabel="observed / expected CC/MCC claims (95 % CI)",
                   title="Upcoding signal by hospital")
    return [(Chart("upcoding", "Upcoding signal", "Forest plot of the hospitals' "
                   "standardised CC/MCC ratios with 95 % intervals."), _save(draw))]


def _drug_value(result: Result, params: Result) -> list[tuple[Chart, Producer]]:
    from healthspace.analyses.plots import plot_km
    from healthspace.payer.value_report import plot_costs

    out: list[tuple[Chart, Producer]] = []
    km = result.get("km")
    if km:
        p = (result.get("logrank") or {}).get("p")
        out.append((Chart("survival", "Survival by arm", "Kaplan–Meier survival curves with "
                          "95 % confidence bands.", ("png",)),
                    _reuse(lambda path: plot_km({"groups": km["groups"], "logrank_p": p}, path,
                                                group=result.get("arm_column"),
                                                title="Kaplan–Meier by arm (pooled over "
                                                      "sites)"))))
    if result.get("arms"):
        out.append((Chart("costs", "Cost per patient-year", "Cost per patient-year per arm "
                          "with confidence intervals.", ("png",)),
                    _reuse(lambda path: plot_costs(result, path))))
    return out


_BUILDERS: dict[str, Callable[[Result, Result], list[tuple[Chart, Producer]]]] = {
    "cohort_count": _cohort_count,
    "glm": _glm,
    "km": _km,
    "cox": _cox,
    "fl_train": _fl_train,
    "fraud_screen": _fraud_screen,
    "drug_value": _drug_value,
}
