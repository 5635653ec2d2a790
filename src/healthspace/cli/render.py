"""Human-readable rendering of study results, per analysis."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from healthspace.core.enums import ExitCode, StudyStatus
from healthspace.core.models import StudyView


def exit_code_for(status: StudyStatus) -> ExitCode:
    return {
        StudyStatus.COMPLETED: ExitCode.OK,
        StudyStatus.PARTIAL: ExitCode.PARTIAL,
        StudyStatus.REJECTED: ExitCode.DENIED,
    }.get(status, ExitCode.ERROR)


def _cell(count: Any) -> str:
    if count is None:
        return "withheld"  # secure aggregation: only the network total is released
    return f"{count:,}" if isinstance(count, int) else str(count)


def secure_note(result: dict[str, Any]) -> str | None:
    """One line explaining a securely aggregated count, or None."""
    if not result.get("secure_aggregation"):
        return None
    note = "secure aggregation: the hub added masked counts and saw only the network total"
    if result.get("sites_withheld"):
        note += ("; per-site counts are withheld, since showing them would let a site that "
                 "hides its count (policy or a small cell) be derived from the total")
    return note


def count_table(result: dict[str, Any], title: str = "cohort counts",
                nodes: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("site")
    table.add_column("persons", justify="right")
    if nodes:
        table.add_column("node status")
    for site, count in result.get("sites", {}).items():
        row = [site, _cell(count)]
        if nodes:
            row.append(nodes.get(site, ""))
        table.add_row(*row)
    for site, status in (nodes or {}).items():
        if site not in result.get("sites", {}):
            table.add_row(site, "-", status)
    bound = " (lower bound: some sites suppressed)" if result.get("total_is_lower_bound") else ""
    secure = " (secure aggregation)" if result.get("secure_aggregation") else ""
    total = f"{_cell(result.get('total', 0))}{bound}{secure}"
    table.add_row("[bold]total[/]", f"[bold]{total}[/]", *([""] if nodes else []))
    return table


def breakdown_table(site: str, cells: list[dict[str, Any]]) -> Table:
    bands = list(dict.fromkeys(c["age_band"] for c in cells))
    sexes = list(dict.fromkeys(c["sex"] for c in cells if c["sex"] != "unknown"))
    lookup = {(c["age_band"], c["sex"]): c["count"] for c in cells}
    table = Table(title=f"{site}: age band × sex")
    table.add_column("age band")
    for sex in sexes:
        table.add_column(sex, justify="right")
    for band in bands:
        if band == "unknown":
            continue
        table.add_row(band, *(str(lookup.get((band, sex), "")) for sex in sexes))
    if ("unknown", "unknown") in lookup:
        table.add_row("other/unknown", str(lookup[("unknown", "unknown")]), "")
    return table


def render_study(console: Console, view: StudyView, *, breakdown: bool = False) -> None:
    console.print(
        f"study {view.id} [bold]{view.analysis}[/] — {view.status.value}"
        + (f" — {view.error}" if view.error else ""),
        highlight=False,
    )
    nodes = {}
    for task in sorted(view.tasks, key=lambda t: t.round):
        nodes[task.node] = task.status.value + (f": {task.error}" if task.error else "")
    if view.result and view.analysis == "cohort_count":
        console.print(count_table(view.result, nodes=nodes))
        if note := secure_note(view.result):
            console.print(note, highlight=False)
        if breakdown:
            for site, cells in view.result.get("breakdown", {}).items():
                console.print(breakdown_table(site, cells))
    elif view.result:
        console.print_json(data=view.result)
    elif nodes:
        table = Table("node", "status")
        for name, status in nodes.items():
            table.add_row(name, status)
        console.print(table)
    if view.cost is not None and (view.cost.invoiced or view.cost.estimate):
        cost = view.cost
        settled = (f"invoiced {cost.currency} {cost.invoiced:,.2f}"
                   if cost.invoiced is not None else "not settled yet")
        estimate = f" (estimate up to {cost.estimate:,.2f})" if cost.estimate else ""
        console.print(f"cost: {settled}{estimate}", highlight=False)
