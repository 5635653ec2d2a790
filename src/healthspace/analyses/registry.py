"""The registry of vetted analyses, looked up by name by hub, node and simulation."""

from __future__ import annotations

import threading

from healthspace.analyses.base import Analysis
from healthspace.core.errors import InvalidInput

_REGISTRY: dict[str, Analysis] = {}
_BUILTIN_LOADED = False
# Request threads of a freshly started hub may all look up an analysis at once: the first
# imports the built-ins while the others wait, and none sees a half-filled registry.
_LOAD_LOCK = threading.RLock()


def register(analysis: Analysis) -> Analysis:
    if analysis.name in _REGISTRY:
        raise ValueError(f"analysis {analysis.name!r} registered twice")
    _REGISTRY[analysis.name] = analysis
    return analysis


def _load_builtin() -> None:
    """Import the built-in analyses once, for their registration side effect."""
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    with _LOAD_LOCK:
        if not _BUILTIN_LOADED:
            _import_builtin()
            _BUILTIN_LOADED = True


def _import_builtin() -> None:
    from healthspace.analyses import (  # noqa: F401
        casemix,
        claim_check,
        cohort_count,
        cox,
        drg_weights,
        drug_value,
        evidence_check,
        fl_score,
        fl_train,
        fraud_screen,
        glm,
        km,
        psi_link,
        pv,
        similar_patients,
        summary,
    )


def get(name: str) -> Analysis:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidInput(f"unknown analysis {name!r}; known: {known}", field="analysis") from None


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)
