"""The figures of each analysis' result, drawn with matplotlib in the viewer's language.

Drawn from the result a viewer may already read, never from rows; every text goes through
the viewer's :class:`~healthspace.hub.console.i18n.Translator` (numbers through its
``number``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from healthspace.hub.console.charts.svg import clean_svg
from healthspace.hub.console.i18n import Translator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BOTH = ("svg", "png")


@dataclass(frozen=True)
class Chart:
    """One figure of a result: ``title`` and ``alt`` are English msgids the page translates."""

    name: str
    title: str
    alt: str
    formats: tuple[str, ...] = BOTH


Producer = Callable[[str, str], bytes]  # (format, the SVG's <title>) -> bytes
Result = dict[str, Any]
Builder = Callable[[Result, Result, Translator], list[tuple[Chart, Producer]]]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def _save(draw: Callable[[], Figure]) -> Producer:
    def produce(fmt: str, title: str) -> bytes:
        buffer = io.BytesIO()
        draw().savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        return clean_svg(buffer.getvalue(), title) if fmt == "svg" else buffer.getvalue()
    return produce


def _shown(t: Translator, value: Any, digits: int | None = None) -> str:
    """A number as the viewer's language writes it; anything else (a suppressed "<k") as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return t.number(value, digits)
    return "–" if value is None else str(value)


def _p(t: Translator, p: float) -> str:
    return "< 0.0001" if p < 1e-4 else t.number(p, 4)  # as the result tables write it


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


def _survival(curves: dict[str, Result], label: Callable[[str], str], heading: str,
              t: Translator, p: float | None) -> Callable[[], Figure]:
    """Step curves with shaded 95 % bands, one per group, and the log-rank p in the title."""
    def draw() -> Figure:
        fig = _figure(6.4, 4.2)
        ax = fig.subplots()
        for name, curve in curves.items():
            keep = [i for i, s in enumerate(curve["survival"]) if s is not None]
            x, s, lo, hi = ([curve[k][i] for i in keep]
                            for k in ("timeline", "survival", "ci_lower", "ci_upper"))
            (line,) = ax.step(x, s, where="post", label=label(name))
            ax.fill_between(x, lo, hi, step="post", alpha=0.2, color=line.get_color())
        ax.set_title(heading if p is None else
                     heading + "\n" + t("log-rank p = {p}", p=_p(t, p)), fontsize=11)
        ax.set_xlabel(t("time"))
        ax.set_ylabel(t("survival probability"))
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        return fig
    return draw


def no_charts(result: Result, params: Result, t: Translator) -> list[tuple[Chart, Producer]]:
    return []


def _cohort_count(result: Result, params: Result, t: Translator
                  ) -> list[tuple[Chart, Producer]]:
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
                ax.annotate(t("not released") if value is None else str(value),
                            (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom")
        ax.set_ylabel(t("persons"))
        ax.set_title(t("Cohort count per site (total {total})",
                       total=_shown(t, result.get("total"))))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return fig

    return [(Chart("sites", "Cohort count per site",
                   "Bar chart of the cohort count per site; suppressed counts are marked."),
             _save(draw))]


def _glm(result: Result, params: Result, t: Translator) -> list[tuple[Chart, Producer]]:
    terms = [term for term in result.get("params", {}) if term != "Intercept"]
    if not terms:
        return []
    family = result.get("family", "gaussian")
    log = family in ("binomial", "poisson")
    f: Callable[[float], float] = math.exp if log else float
    est = [f(result["params"][term]) for term in terms]
    lo = [f(result["conf_int"][term][0]) for term in terms]
    hi = [f(result["conf_int"][term][1]) for term in terms]
    xlabel, title = {
        "binomial": (t("odds ratio (95 % CI)"), t("GLM ({family}): odds ratios", family=family)),
        "poisson": (t("rate ratio (95 % CI)"), t("GLM ({family}): rate ratios", family=family)),
    }.get(family, (t("coefficient (95 % CI)"), t("GLM ({family}): coefficients",
                                                 family=family)))
    draw = _forest(terms, est, lo, hi, ref=1.0 if log else 0.0, log=log, xlabel=xlabel,
                   title=title)
    return [(Chart("coefficients", "Coefficients", "Forest plot of the model coefficients "
                   "with 95 % confidence intervals."), _save(draw))]


def _km(result: Result, params: Result, t: Translator) -> list[tuple[Chart, Producer]]:
    if not result.get("timeline") and not result.get("groups"):
        return []
    group = params.get("group")
    draw = _survival(result.get("groups", {"all": result}),
                     lambda name: f"{group}={name}" if group is not None else t("all"),
                     t("Kaplan–Meier survival (pooled over sites)"), t,
                     result.get("logrank_p"))
    return [(Chart("survival", "Survival", "Kaplan–Meier survival curves with 95 % "
                   "confidence bands."), _save(draw))]


def _cox(result: Result, params: Result, t: Translator) -> list[tuple[Chart, Producer]]:
    terms = list(result.get("hazard_ratios", {}))
    if not terms:
        return []
    draw = _forest(terms, [result["hazard_ratios"][term] for term in terms],
                   [math.exp(result["conf_int"][term][0]) for term in terms],
                   [math.exp(result["conf_int"][term][1]) for term in terms], ref=1.0,
                   log=True, xlabel=t("hazard ratio (95 % CI)"),
                   title=t("Cox model: hazard ratios"))
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


def _fl_train(result: Result, params: Result, t: Translator) -> list[tuple[Chart, Producer]]:
    out: list[tuple[Chart, Producer]] = []
    blocks = {"training": t("training"), "validation": t("validation")}
    rounds = [r for r in result.get("rounds") or [] if r.get("loss") is not None]
    if rounds:
        def training() -> Figure:
            fig = _figure(6.4, 3.8)
            ax = fig.subplots()
            x = [r["round"] for r in rounds]
            ax.plot(x, [r["loss"] for r in rounds], marker="o", color="#c0504d",
                    label=t("loss"))
            if any(r.get("validation_loss") is not None for r in rounds):
                ax.plot(x, [r.get("validation_loss") for r in rounds], marker="o",
                        linestyle="--", color="#c0504d", label=t("validation loss"))
            ax.set_xlabel(t("round"))
            ax.set_ylabel(t("log loss"))
            right = ax.twinx()
            right.plot(x, [r.get("auc") for r in rounds], marker="s", color="#4f81bd",
                       label=t("AUC"))
            right.set_ylabel(t("AUC"))
            lines = ax.get_legend_handles_labels()
            more = right.get_legend_handles_labels()
            ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best")
            ax.set_title(t("Training per round"))
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
                label = (blocks[name] if auc is None else
                         t("{name} (AUC {auc})", name=blocks[name], auc=t.number(auc, 3)))
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], xerr=[p[2] for p in pts],
                            yerr=[p[3] for p in pts], marker="o", capsize=2, label=label)
            ax.plot([0, 1], [0, 1], color="#5b6475", linestyle="--", linewidth=1)
            ax.set_xlabel(t("false positive rate"))
            ax.set_ylabel(t("true positive rate"))
            ax.set_title(t("ROC at the calibration-bin thresholds\n(bars: where suppressed "
                           "bins leave a point)"), fontsize=10)
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
                            marker="o", label=blocks[name])
            ax.plot([0, 1], [0, 1], color="#5b6475", linestyle="--", linewidth=1)
            ax.set_xlabel(t("mean predicted risk"))
            ax.set_ylabel(t("observed rate"))
            ax.set_title(t("Calibration"))
            ax.legend(loc="upper left")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            return fig
        out.append((Chart("calibration", "Calibration", "Calibration plot: mean predicted "
                          "risk against the observed rate per bin."), _save(calibration)))
    return out


def _fraud_screen(result: Result, params: Result, t: Translator
                  ) -> list[tuple[Chart, Producer]]:
    rows = [r for r in result.get("upcoding") or [] if r.get("ratio") and r.get("ci")]
    if not rows:
        return []
    draw = _forest([r["hospital"] for r in rows], [r["ratio"] for r in rows],
                   [max(r["ci"][0], 1e-3) for r in rows], [r["ci"][1] for r in rows], ref=1.0,
                   log=True, xlabel=t("observed / expected CC/MCC claims (95 % CI)"),
                   title=t("Upcoding signal by hospital"))
    return [(Chart("upcoding", "Upcoding signal", "Forest plot of the hospitals' "
                   "standardised CC/MCC ratios with 95 % intervals."), _save(draw))]


def _costs(result: Result, t: Translator) -> Callable[[], Figure]:
    """Cost per patient-year per arm: bars with the CI as error bars, Δ in the title."""
    def draw() -> Figure:
        names = list(result["arms"])
        cost = [result["arms"][n]["cost_per_py"] for n in names]
        est = [c["estimate"] for c in cost]
        fig = _figure(6.0, 4.2)
        ax = fig.subplots()
        ax.bar(names, est, yerr=[[e - c["ci"][0] for e, c in zip(est, cost, strict=True)],
                                 [c["ci"][1] - e for e, c in zip(est, cost, strict=True)]],
               capsize=8, color=["#c0504d", "#4f81bd"][:len(names)])
        delta = result["comparison"]["delta_cost_per_py"] or {}
        shown = _shown(t, delta.get("estimate"), 0)
        if delta.get("ci"):
            shown += f" ({_shown(t, delta['ci'][0], 0)} – {_shown(t, delta['ci'][1], 0)})"
        ax.set_title(t("Cost per patient-year ({currency}, {level} % CI)",
                       currency=result["currency"], level=round(100 * (1 - result["alpha"])))
                     + f"\nΔ = {shown}", fontsize=11)
        ax.set_ylabel(t("{currency} per patient-year", currency=result["currency"]))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return fig
    return draw


def _drug_value(result: Result, params: Result, t: Translator
                ) -> list[tuple[Chart, Producer]]:
    out: list[tuple[Chart, Producer]] = []
    km = result.get("km")
    if km:
        arm = result.get("arm_column")
        draw = _survival(km["groups"], lambda name: f"{arm}={name}" if arm else name,
                         t("Kaplan–Meier by arm (pooled over sites)"), t,
                         (result.get("logrank") or {}).get("p"))
        out.append((Chart("survival", "Survival by arm", "Kaplan–Meier survival curves with "
                          "95 % confidence bands."), _save(draw)))
    if result.get("arms"):
        out.append((Chart("costs", "Cost per patient-year", "Cost per patient-year per arm "
                          "with confidence intervals."), _save(_costs(result, t))))
    return out


def _similar_patients(result: Result, params: Result, t: Translator
                      ) -> list[tuple[Chart, Producer]]:
    groups = [g for g in result.get("groups") or [] if g.get("km")]
    if not groups:
        return []
    kinds = {"none": t("none of the candidates"), "all": t("all matched")}
    names = {g["name"]: kinds.get(g.get("kind"), g["name"]) for g in groups}
    draw = _survival({g["name"]: g["km"] for g in groups}, lambda name: names[name],
                     t("Free of {outcome} among similar patients",
                       outcome=result.get("km_outcome")), t, None)
    return [(Chart("survival", "Outcome-free survival by treatment", "Kaplan–Meier curves of "
                   "the similar patients, one per treatment group, with 95 % confidence "
                   "bands."), _save(draw))]


BUILDERS: dict[str, Builder] = {
    "cohort_count": _cohort_count,
    "glm": _glm,
    "km": _km,
    "cox": _cox,
    "fl_train": _fl_train,
    "fraud_screen": _fraud_screen,
    "drug_value": _drug_value,
    "similar_patients": _similar_patients,
}
