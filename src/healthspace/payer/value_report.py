"""The drug value report: one markdown file and its PNG plots, drawn from a released result.

Input is the result of the ``drug_value`` analysis (or the ``study results --json`` document
that wraps it); nothing here touches rows. Plots are matplotlib (Agg, headless), as
:mod:`healthspace.analyses.plots`, whose Kaplan–Meier figure is reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthspace.analyses.plots import plot_km
from healthspace.core.errors import InvalidInput

REPORT = "drug_value_report.md"
KM_PNG = "km_by_arm.png"
COST_PNG = "cost_per_patient_year.png"


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    plots: list[Path]


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value  # a suppressed count, "<k"
    return f"{value:,.{digits}f}"


def _ci(item: dict[str, Any] | None, digits: int = 2, key: str = "estimate") -> str:
    if not item:
        return "–"
    text = _num(item[key], digits)
    if item.get("ci") is not None:
        lo, hi = item["ci"]
        text += f" ({_num(lo, digits)} to {_num(hi, digits)})"
    return text


def _check(result: dict[str, Any]) -> None:
    if not isinstance(result, dict) or result.get("analysis") != "drug_value":
        raise InvalidInput("not a drug_value result (its 'analysis' is not drug_value)",
                           field="result")


def plot_costs(result: dict[str, Any], path: Path) -> Path:
    """Cost per patient-year per arm: bars with the CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["arms"])
    est = [result["arms"][n]["cost_per_py"]["estimate"] for n in names]
    lo = [e - result["arms"][n]["cost_per_py"]["ci"][0] for n, e in zip(names, est, strict=True)]
    hi = [result["arms"][n]["cost_per_py"]["ci"][1] - e for n, e in zip(names, est, strict=True)]
    confidence = round(100 * (1 - result["alpha"]))
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    try:
        ax.bar(names, est, yerr=[lo, hi], capsize=8, color=["#c0504d", "#4f81bd"][:len(names)])
        delta = result["comparison"]["delta_cost_per_py"]
        ax.set_title(f"Cost per patient-year ({result['currency']}, {confidence} % CI)\n"
                     f"Δ = {_ci(delta, 0)}")
        ax.set_ylabel(f"{result['currency']} per patient-year")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def _arm_rows(result: dict[str, Any]) -> list[str]:
    cur = result["currency"]
    horizon = result.get("horizon_days")
    head = ["arm", "persons", "events", "person-years", "events / 100 PY (CI)",
            f"cost / PY, {cur} (CI)", "median survival (days)"]
    if horizon is not None:
        head.append(f"survival at {horizon:g} days (CI)")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arm in result["arms"].items():
        median = arm["median_survival_days"]
        cells = [f"{name} ({arm['role']})", _num(arm["persons"], 0), _num(arm["events"], 0),
                 _num(arm["person_years"], 1), _ci(arm["events_per_100py"]),
                 _ci(arm["cost_per_py"], 0),
                 "not reached" if median is None and arm["events_per_100py"] else _num(median, 0)]
        if horizon is not None:
            cells.append(_ci(arm["survival_at_horizon"], 3))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _comparison(result: dict[str, Any]) -> list[str]:
    cur = result["currency"]
    c = result["comparison"]
    lines = [f"- Δ cost per patient-year (treatment − comparator): "
             f"{_ci(c['delta_cost_per_py'], 0)} {cur}"]
    if result.get("withheld"):
        return [*lines, f"- Outcomes withheld: {result['withheld']}."]
    lines.append(f"- Events avoided per 100 patient-years (comparator − treatment): "
                 f"{_ci(c['events_avoided_per_100py'])}")
    if c.get("survival_difference_at_horizon") is not None:
        lines.append(f"- Survival difference at {result['horizon_days']:g} days (treatment − "
                     f"comparator): {c['survival_difference_at_horizon']:.4f}")
    if result.get("logrank"):
        lines.append(f"- Log-rank test: χ² = {result['logrank']['statistic']:.3f}, "
                     f"p = {result['logrank']['p']:.3g}")
    cox = result.get("cox")
    if cox:
        adjusted = (f"adjusted for {', '.join(cox['adjusted_for'])}" if cox["adjusted_for"]
                    else "unadjusted")
        hazard = _ci(cox, 3, "hazard_ratio")
        lines.append(f"- Cox hazard ratio ({adjusted}): {hazard}, p = {cox['p']:.3g}")
    icer = c["icer"]
    value = "not given"
    if icer["estimate"] is not None:
        value = f"{_num(icer['estimate'], 0)} {icer['unit']}"
        if icer.get("ci"):
            value += f" ({_num(icer['ci'][0], 0)} to {_num(icer['ci'][1], 0)})"
    lines.append(f"- **ICER: {value}** — {icer['quadrant']}: {icer['interpretation']}.")
    if icer.get("note"):
        lines.append(f"  - {icer['note']}.")
    return lines


def render_markdown(result: dict[str, Any], plots: list[Path]) -> str:
    """The report's text; ``plots`` are linked by file name (they sit beside it)."""
    _check(result)
    confidence = round(100 * (1 - result["alpha"]))
    title = f"# Drug value: {result['treatment']} vs {result['comparator']}"
    if result.get("study_id") is not None:
        title += f" (study {result['study_id']})"
    sites = ", ".join(result.get("sites") or {}) or "–"
    secure = " under secure aggregation" if result.get("secure_aggregation") else ""
    parts = [
        title, "",
        f"Arms from column `{result['arm_column']}`; {result['nobs']:,} persons at {sites}"
        f"{secure}; minimum cell size {result['min_cell_size']}; {confidence} % intervals.",
        "", "## Per arm", "", *_arm_rows(result), "", "## Comparison", "", *_comparison(result),
        "",
    ]
    if plots:
        parts += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    parts += ["## Definitions", ""]
    parts += [f"- **{key}**: {text}" for key, text in result["definitions"].items()]
    parts += ["", "## Caveats", ""] + [f"- {text}" for text in result["caveats"]] + [""]
    return "\n".join(parts)


def write_report(result: dict[str, Any], out_dir: Path) -> ReportFiles:
    """Write the markdown report and its plots into ``out_dir`` (created if missing)."""
    _check(result)
    out_dir = Path(out_dir)
    if not out_dir.parent.exists():
        raise InvalidInput(f"folder {out_dir.parent} does not exist", field="out")
    out_dir.mkdir(exist_ok=True)
    plots: list[Path] = []
    km = result.get("km")
    if km:
        p = (result.get("logrank") or {}).get("p")
        plots.append(plot_km({"groups": km["groups"], "logrank_p": p}, out_dir / KM_PNG,
                             group=result["arm_column"],
                             title="Kaplan–Meier by arm (pooled over sites)"))
    plots.append(plot_costs(result, out_dir / COST_PNG))
    markdown = out_dir / REPORT
    markdown.write_text(render_markdown(result, plots), encoding="utf-8")
    return ReportFiles(markdown, plots)
