"""The combine side of the similar-patient lookup: the nodes' round-2 partials pooled.

Sizes and events add up over the nodes that released them; a suppressed value is never
guessed but shown as ``"<k"`` with the range it leaves for a rate. Kaplan–Meier curves are the
product-limit estimate of the pooled tallies; distance histograms pool on common edges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from healthspace.analyses.km import _curve, _merge
from healthspace.analyses.similar_params import SimilarParams
from healthspace.privacy.disclosure import suppressed_label

# Distance histogram edges: the distance is an RMS over weighted coordinates, so 1 means
# "one standard deviation (or a whole code set) apart on average".
EDGES = (*(round(0.05 * i, 2) for i in range(41)), 2.5, 3.0, 4.0, 6.0, math.inf)
NONE = "none of the candidates"
ALL = "all matched"


def pool(partials: Mapping[str, dict[str, Any]], params: SimilarParams,
         scale: Mapping[str, Any]) -> dict[str, Any]:
    """The network answer from the nodes' round-2 partials."""
    names = sorted(partials)
    k_used = _min_cell(partials)
    matched = sum(int(partials[s]["matched"]) for s in names)
    result: dict[str, Any] = {
        "k": params.k, "min_cell_size": k_used, "matched": matched,
        "nodes": {s: {"candidates": partials[s]["candidates"],
                      "matched": int(partials[s]["matched"])} for s in names},
        "standardisation": {f: v for f, v in scale.items() if v is not None},
        "features_dropped": sorted(f for f, v in scale.items() if v is None),
        "similarity": _pool_similarity({s: partials[s]["similarity"] for s in names}, matched),
        "km_outcome": params.km_name(),
        "groups": _pool_groups(partials, names, params, k_used),
    }
    return result


def _min_cell(partials: Mapping[str, dict[str, Any]]) -> int:
    """The largest minimum cell size the nodes applied."""
    return max(_node_k(p) for p in partials.values())


def _node_k(partial: Mapping[str, Any]) -> int:
    return int(partial["min_cell_size"])


def _edge(position: int) -> float | None:
    return None if math.isinf(EDGES[position]) else EDGES[position]


def _pool_similarity(parts: Mapping[str, dict[str, Any]], matched: int) -> dict[str, Any]:
    """Pooled bins on the edges every node cut at (so each pooled count is an exact sum of
    released node bins), each node's own bins, and the pooled mean and SD."""
    nodes = {site: {"edges": [_edge(b[0]) for b in part["bins"]] + [_edge(part["bins"][-1][1])],
                    "counts": [int(b[2]) for b in part["bins"]]}
             for site, part in parts.items()}
    parts = dict(parts)
    cuts = set.intersection(*({b[0] for b in p["bins"]} | {b[1] for b in p["bins"]}
                              for p in parts.values()))
    edges = sorted(cuts)
    counts = [0] * (len(edges) - 1)
    for part in parts.values():
        for first, _, count in part["bins"]:
            counts[edges.index(first) if first in cuts else
                   max(i for i, e in enumerate(edges[:-1]) if e <= first)] += int(count)
    total = sum(float(p["sum"]) for p in parts.values())
    squares = sum(float(p["sumsq"]) for p in parts.values())
    mean = total / matched if matched else None
    sd = (math.sqrt(max((squares - matched * mean * mean) / (matched - 1), 0.0))
          if mean is not None and matched > 1 else None)
    return {"edges": [_edge(e) for e in edges], "counts": counts, "mean": mean, "sd": sd,
            "nodes": nodes}


def _pool_groups(partials: Mapping[str, dict[str, Any]], names: list[str],
                 params: SimilarParams, k: int) -> list[dict[str, Any]]:
    order = [g["name"] for g in partials[names[0]]["groups"]]
    matched = sum(int(partials[s]["matched"]) for s in names)
    out: list[dict[str, Any]] = []
    for name in order:
        parts = {s: next(g for g in partials[s]["groups"] if g["name"] == name) for s in names}
        released = {s: g for s, g in parts.items() if not isinstance(g["n"], str)}
        hidden = sorted(set(names) - set(released))
        n = sum(int(g["n"]) for g in released.values())
        base = sum(int(partials[s]["matched"]) for s in released)
        group: dict[str, Any] = {
            "name": name, "kind": parts[names[0]]["kind"],
            "treated": n if released else suppressed_label(k),
            "share": n / base if released and base else None,
            "nodes_suppressed": hidden, "outcomes": {}, "km": None}
        if name == ALL:
            group["share"] = 1.0 if matched else None
        for outcome in params.outcomes:
            values = [g["outcomes"][outcome.name] for g in released.values()]
            events = sum(int(v) for v in values if not isinstance(v, str))
            hidden_events = sum(isinstance(v, str) for v in values)
            # each hidden count is at most its node's k − 1
            most_hidden = sum(_node_k(partials[s]) - 1 for s, g in released.items()
                              if isinstance(g["outcomes"][outcome.name], str))
            entry: dict[str, Any] = {"events": events if values else suppressed_label(k),
                                     "rate": None, "rate_range": None}
            if values and n:
                if hidden_events:
                    entry["events"] = events or suppressed_label(k)
                    entry["rate_range"] = [events / n, (events + most_hidden) / n]
                else:
                    entry["rate"] = events / n
            entry["nodes_suppressed"] = sorted(
                s for s, g in released.items()
                if isinstance(g["outcomes"][outcome.name], str))
            group["outcomes"][outcome.name] = entry
        if released:
            group["km"] = _curve(*_merge([g["km"] for g in released.values()]))
        out.append(group)
    return out
