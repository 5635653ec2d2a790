"""Similar-patient lookups from the client: read a profile file (PROFILE.json, or YAML), add
the command line's treatments, outcomes, k and nodes, submit, wait.

The request model and the study it becomes live in ``healthspace.analyses.similar_lookup``
(pure, shared with the console, which may not import the client); they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from healthspace.analyses.similar_lookup import (
    DEFAULT_OUTCOMES,
    PRESETS,
    LookupRequest,
    amend,
    build_spec,
    parse_outcome,
    parse_request,
    parse_treatment,
    preset,
)
from healthspace.client.sdk import HubClient
from healthspace.client.studyfile import inline_paths, read_document
from healthspace.core.models import StudySpec, StudyView

__all__ = ["DEFAULT_OUTCOMES", "PRESETS", "LookupRequest", "amend", "build_spec",
           "load_lookup", "lookup_spec", "parse_outcome", "parse_request", "parse_treatment",
           "preset", "run_lookup"]


def load_lookup(path: Path) -> LookupRequest:
    """Read a profile file; a ``cohort_path`` is resolved relative to it and inlined."""
    return parse_request(inline_paths(read_document(path, "profile file"), path, ("cohort",)))


def lookup_spec(source: Path | LookupRequest, *, presets: Iterable[str] = (),
                treatments: Iterable[str] = (), outcomes: Iterable[str] = (),
                k: int | None = None, nodes: Sequence[str] | None = None) -> StudySpec:
    """The study a profile file (or request) asks for, with the command line's additions:
    ``presets`` by name, ``treatments`` as ``NAME=CODE[,CODE...][@DAYS]``, ``outcomes`` as
    ``NAME=CODE[,CODE...][@DAYS]`` or ``death@DAYS`` (replacing the file's)."""
    request = source if isinstance(source, LookupRequest) else load_lookup(source)
    request = amend(request, presets=presets,
                    treatments=[parse_treatment(t, "--treatment") for t in treatments],
                    outcomes=[parse_outcome(o, "--outcome") for o in outcomes],
                    k=k, nodes=nodes)
    return build_spec(request)


def run_lookup(client: HubClient, source: Path | LookupRequest | StudySpec, *,
               timeout: float = 600.0,
               on_update: Callable[[StudyView], None] | None = None) -> StudyView:
    """Submit a lookup and wait until it ends (or ``timeout`` seconds pass); the view's
    ``result`` is the lookup's result once it completed."""
    spec = source if isinstance(source, StudySpec) else lookup_spec(source)
    view = client.submit(spec)
    return client.wait(view.id, timeout=timeout, on_update=on_update)
