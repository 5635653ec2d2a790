"""Tables of a similar-patient lookup's result for people (``healthspace cds lookup``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from healthspace.analyses.similar_lookup import bin_labels, survival_at, time_points


def _n(value: Any) -> str:
    """A count, or a suppressed cell (``<10``) as released."""
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _share(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _rate(outcome: dict[str, Any] | None) -> str:
    """Events and their rate; where nodes suppressed their counts, the range the rate lies in."""
    if not outcome:
        return "–"
    rate, bounds = outcome.get("rate"), outcome.get("rate_range")
    if rate is not None:
        return f"{_n(outcome.get('events'))} ({100 * rate:.1f} %)"
    if bounds:
        return f"{_n(outcome.get('events'))} ({100 * bounds[0]:.1f}–{100 * bounds[1]:.1f} %)"
    return _n(outcome.get("events"))


def nodes_table(result: dict[str, Any]) -> Table:
    table = Table("node", "candidates", "matched", title="similar patients per node")
    for name, node in (result.get("nodes") or {}).items():
        table.add_row(name, _n(node.get("candidates")), _n(node.get("matched")))
    table.add_row("[bold]total[/]", "", f"[bold]{_n(result.get('matched'))}[/]")
    return table


def similarity_note(result: dict[str, Any]) -> str | None:
    sim = result.get("similarity") or {}
    parts = [f"mean {sim['mean']:.3g}, SD {sim['sd']:.3g}"] if sim.get("mean") is not None \
        else []
    if sim.get("suppressed_cells"):
        parts.append(f"{sim['suppressed_cells']} suppressed node cell(s) not counted")
    return f"distance: {'; '.join(parts)}" if parts else None


def similarity_table(result: dict[str, Any]) -> Table:
    sim = result.get("similarity") or {}
    table = Table("distance", "patients", title="similarity (distance to the profile)")
    for label, count in zip(bin_labels(sim.get("edges") or []), sim.get("counts") or [],
                            strict=False):
        table.add_row(label, _n(count))
    return table


def groups_table(result: dict[str, Any]) -> Table:
    groups = result.get("groups") or []
    outcomes = list(dict.fromkeys(name for g in groups for name in g.get("outcomes") or {}))
    table = Table("group", "treated", "share", *[f"{o}: events (rate)" for o in outcomes],
                  f"median time to {result.get('km_outcome')}",
                  title="what followed, per treatment")
    for g in groups:
        km = g.get("km") or {}
        median = km.get("median") if km else None
        table.add_row(_label(g), _n(g.get("treated")), _share(g.get("share")),
                      *[_rate((g.get("outcomes") or {}).get(o)) for o in outcomes],
                      "–" if not km else "not reached" if median is None else f"{median:g}")
    return table


def survival_table(result: dict[str, Any]) -> Table | None:
    groups = [g for g in result.get("groups") or [] if g.get("km")]
    days = time_points(groups)
    if not days:
        return None
    table = Table("group", *[f"day {d}" for d in days],
                  title=f"free of {result.get('km_outcome')} (Kaplan–Meier)")
    for g in groups:
        points = [survival_at(g["km"], d) for d in days]
        table.add_row(_label(g), *["–" if s is None else f"{s:.3f}" for s in points])
    return table


def _label(group: dict[str, Any]) -> str:
    return str(group.get("name"))


def show_lookup(console: Console, result: dict[str, Any]) -> None:
    """Every table of the result, then what was left out and why."""
    console.print(f"{_n(result.get('matched'))} similar patients (k = {result.get('k')} per "
                  f"node; cells below {result.get('min_cell_size')} shown as <"
                  f"{result.get('min_cell_size')})", highlight=False)
    console.print(nodes_table(result))
    console.print(similarity_table(result))
    if note := similarity_note(result):
        console.print(note, highlight=False)
    console.print(groups_table(result))
    if (curves := survival_table(result)) is not None:
        console.print(curves)
    if dropped := result.get("features_dropped"):
        console.print(f"features left out of the distance: {', '.join(dropped)}",
                      highlight=False)
    for g in result.get("groups") or []:
        if g.get("nodes_suppressed"):
            console.print(f"{g['name']}: not released by {', '.join(g['nodes_suppressed'])} "
                          f"(below the minimum cell size there)", highlight=False)
