"""PNG figures of released results (matplotlib, headless): drawn from the result, never rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _steps(curve: dict[str, Any]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Timeline and values with missing (undefined) points dropped."""
    keep = [i for i, s in enumerate(curve["survival"]) if s is not None]
    pick = lambda key: [curve[key][i] for i in keep]  # noqa: E731
    return pick("timeline"), pick("survival"), pick("ci_lower"), pick("ci_upper")


def plot_km(result: dict[str, Any], path: Path, *, group: str | None = None,
            title: str | None = None) -> Path:
    """Step curves with shaded 95 % bands, one per group, and the log-rank p in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result.get("groups", {"all": result})
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=120)
    try:
        for name, curve in curves.items():
            t, s, lo, hi = _steps(curve)
            label = f"{group}={name}" if group is not None else "all"
            (line,) = ax.step(t, s, where="post", label=label)
            ax.fill_between(t, lo, hi, step="post", alpha=0.2, color=line.get_color())
        heading = title or "Kaplan–Meier survival (pooled over sites)"
        if result.get("logrank_p") is not None:
            heading += f"\nlog-rank p = {result['logrank_p']:.4g}"
        ax.set_title(heading)
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return Path(path)
