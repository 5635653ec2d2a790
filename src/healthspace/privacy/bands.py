"""Disclosure control for summaries: banded extremes, k-merged histograms, protected cross-tabs.

Three node-side helpers, each a pure function of the site's values and the minimum cell size
``k``:

- :func:`band_min` / :func:`band_max` release the minimum (maximum) only as a band
  ``[lo, lo + w)`` (``(hi - w, hi]``) whose width ``w`` is a 1, 2 or 5 × 10^m step chosen from
  the value scale and widened until the band holds at least ``k`` values;
- :func:`merge_bins` merges adjacent bins of a fine histogram until every released bin holds at
  least ``k`` persons or none, never separating the extremes from ``k - 1`` neighbours;
- :func:`release_crosstab` releases a two-way table next to its margins (which equal the
  one-way frequency tables) with complementary suppression along every row and column.

And their hub-side readers: :func:`histogram_quantiles` brackets pooled quantiles from merged
histograms, :func:`pool_cell` sums released cells into a lower bound with an upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from healthspace.privacy.disclosure import Released, check_k, release_table, suppressed_label

R = TypeVar("R", bound=Hashable)
C = TypeVar("C", bound=Hashable)

FINE_STEPS = 1000  # the band width starts near (max - min) / FINE_STEPS


def nice_widths(start: float) -> Iterator[tuple[float, int]]:
    """The 1-2-5 widths (as ``(width, decimals)``) from the first one ``>= start`` upwards."""
    exponent = math.floor(math.log10(start)) if start > 0 else -12
    while True:
        for mantissa in (1, 2, 5):
            width = mantissa * 10.0**exponent
            if width >= start * (1 - 1e-12):
                yield width, max(0, -exponent)
        exponent += 1


def _edge(index: int, width: float, decimals: int) -> float:
    """``index × width`` rounded to the width's decimals, so edges print as 0.4 not 0.4000…1."""
    return round(index * width, decimals)


def _scale_start(values: np.ndarray) -> float:
    spread = float(values.max() - values.min())
    if spread > 0:
        return spread / FINE_STEPS
    return max(abs(float(values.max())), 1.0) * 1e-6


def band_min(values: np.ndarray, k: int) -> tuple[float, float]:
    """``(lo, hi)``: the minimum lies in ``[lo, hi)`` and so do at least ``k`` values."""
    check_k(k)
    if len(values) < k:
        raise ValueError("fewer values than the minimum cell size")
    low = float(values.min())
    for width, decimals in nice_widths(_scale_start(values)):
        j = math.floor(low / width)
        while _edge(j + 1, width, decimals) <= low:  # float division can land one band short
            j += 1
        while _edge(j, width, decimals) > low:
            j -= 1
        lo, hi = _edge(j, width, decimals), _edge(j + 1, width, decimals)
        if int(np.count_nonzero((values >= lo) & (values < hi))) >= k:
            return lo, hi
    raise AssertionError("unreachable: widths grow without bound")  # pragma: no cover


def band_max(values: np.ndarray, k: int) -> tuple[float, float]:
    """``(lo, hi)``: the maximum lies in ``(lo, hi]`` and so do at least ``k`` values."""
    lo, hi = band_min(-np.asarray(values, dtype=np.float64), k)
    return -hi + 0.0, -lo + 0.0  # + 0.0 turns -0.0 into 0.0


def merge_bins(counts: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """Merge adjacent fine bins into ``(start, end, count)`` bins of ``>= k`` persons or 0.

    Leading empty bins join the first bin and trailing ones (with any remainder below ``k``)
    the last, so the released bins never pin the minimum or maximum closer than the ``k``
    persons around it; empty runs between two released bins are released as empty bins.
    """
    check_k(k)
    size = len(counts)
    out: list[list[int]] = []
    start, acc = 0, 0
    for i, count in enumerate(int(c) for c in counts):
        if acc == 0 and count == 0 and out:
            if out[-1][2] == 0:
                out[-1][1] = i + 1
            else:
                out.append([i, i + 1, 0])
            start = i + 1
            continue
        acc += count
        if acc >= k:
            out.append([start, i + 1, acc])
            start, acc = i + 1, 0
    while out and out[-1][2] == 0:
        out.pop()
    if out:
        out[-1][1], out[-1][2] = size, out[-1][2] + acc
    else:
        out.append([0, size, acc])
    return [(s, e, c) for s, e, c in out]


def release_crosstab(
    cells: Mapping[tuple[R, C], int], k: int
) -> tuple[dict[tuple[R, C], Released], dict[R, Released], dict[C, Released]]:
    """Release a two-way table, its row margins and its column margins.

    The margins get :func:`release_table` (the same pattern as the one-way frequency tables
    of the two variables). Every cell of a row or column whose margin is hidden is hidden too;
    then, along every row and column whose margin is released, hidden cells are added
    (smallest first) until the line has none, or at least two whose derivable sum is 0 or at
    least ``k`` — the rule :func:`release_table` applies to a single line.
    """
    check_k(k)
    rows: dict[R, int] = {}
    cols: dict[C, int] = {}
    for (r, c), n in cells.items():
        rows[r] = rows.get(r, 0) + int(n)
        cols[c] = cols.get(c, 0) + int(n)
    row_out, col_out = release_table(rows, k), release_table(cols, k)
    hidden = {key for key, n in cells.items()
              if n < k or isinstance(row_out[key[0]], str) or isinstance(col_out[key[1]], str)}
    lines = [[key for key in cells if key[0] == r] for r in rows if not isinstance(row_out[r], str)]
    lines += [[key for key in cells if key[1] == c] for c in cols
              if not isinstance(col_out[c], str)]
    changed = True
    while changed:
        changed = False
        for line in lines:
            shut = [key for key in line if key in hidden]
            total = sum(cells[key] for key in shut)
            if not shut or (len(shut) >= 2 and (total == 0 or total >= k)):
                continue
            open_ = [key for key in line if key not in hidden]
            if open_:
                hidden.add(min(open_, key=lambda key: cells[key]))
                changed = True
    label = suppressed_label(k)
    released = {key: (label if key in hidden else int(n)) for key, n in cells.items()}
    return released, row_out, col_out


def histogram_quantiles(hists: list[list[list[int]]], lo: float, hi: float, bins: int,
                        qs: list[float]) -> list[dict[str, Any]]:
    """Quantiles of the pooled data from per-site merged histograms on one fine grid.

    For every fine edge the pooled count below it is bracketed by the sites' released bins;
    the ``j``-th order statistic lies between the last edge surely below it and the first edge
    surely above it, and numpy's linear quantile between two neighbouring order statistics.
    """
    edges = np.linspace(lo, hi, bins + 1)
    index = np.arange(bins + 1)
    below_lo = np.zeros(bins + 1, dtype=np.int64)
    below_hi = np.zeros(bins + 1, dtype=np.int64)
    density = np.zeros(bins)
    for hist in hists:
        cuts = np.array([hist[0][0]] + [e for _, e, _ in hist])
        cum = np.concatenate([[0], np.cumsum([c for _, _, c in hist])])
        below_lo += cum[np.searchsorted(cuts, index, side="right") - 1]
        below_hi += cum[np.searchsorted(cuts, index, side="left")]
        for s, e, c in hist:
            density[s:e] += c / (e - s)
    n = int(below_lo[-1])
    cdf = np.concatenate([[0.0], np.cumsum(density)])
    out = []
    for q in qs:
        h = (n - 1) * q
        j_lo, j_hi = math.floor(h), math.ceil(h)
        lower = float(edges[np.nonzero(below_hi <= j_lo)[0].max()])
        upper = float(edges[np.nonzero(below_lo >= j_hi + 1)[0].min()])
        value = float(np.interp(h + 0.5, cdf, edges))
        value = min(max(value, lower), upper)
        out.append({"q": q, "value": value, "lower": lower, "upper": upper,
                    "error_bound": upper - lower})
    return out


def pool_cell(values: Mapping[str, tuple[Released | None, int]]) -> dict[str, Any]:
    """Pool one cell from ``site -> (released value, or None for a withheld stratum; the most
    a hidden value there can be)``."""
    count = sum(v for v, _ in values.values() if isinstance(v, int))
    slack = sum(room for v, room in values.values() if not isinstance(v, int))
    display = str(count) if slack == 0 else (f"≥{count}" if count else f"≤{slack}")
    return {"count": count, "exact": slack == 0, "upper": count + slack, "display": display,
            "sites": {s: ("withheld" if v is None else v) for s, (v, _) in values.items()}}


def released_room(released: Iterable[Released], total: int) -> int:
    """The most any suppressed cell of a line can hold: its total minus the released cells."""
    return total - sum(v for v in released if isinstance(v, int))
