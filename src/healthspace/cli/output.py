"""Shared CLI output: JSON on stdout, people's tables on stdout, logs and progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from healthspace.core.logs import configure_logging

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def emit_json(doc: Any) -> None:
    """Exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Logs to stderr as Rich text or one JSON object per line (see core.logs)."""
    configure_logging(level, fmt, console=err)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, done, total)`` callback drawn on stderr."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield update
