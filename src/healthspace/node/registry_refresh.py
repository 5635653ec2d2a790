"""Keeping a node's registries fresh: which are due, refreshing them, reporting to the hub.

The agent calls :meth:`RegistryKeeper.sync` once per poll cycle. It fetches the registries the
node takes part in from the hub at most every :data:`CHECK_S` seconds, refreshes those that are
due — new, re-versioned, older than their ``every_hours``, or built from a store that has since
been re-ingested (``on_ingest``) — for at most about :data:`BUDGET_S` seconds per cycle (always
at least one), and reports every registry's status in one signed ``registry.status``
envelope whenever it changed. The agent is single-threaded: a cycle that refreshes is a few
seconds longer; the next task waits that long at most. ``node registry refresh`` uses the
same keeper, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from healthspace.core.canonical import digest
from healthspace.core.clock import iso
from healthspace.core.envelope import Envelope
from healthspace.core.registry_defs import RegistryView, ReportedRegistry
from healthspace.node import audit, consent, registries
from healthspace.node.registries import Materialised
from healthspace.node.state import NodeState

log = logging.getLogger("healthspace.node")
CHECK_S = 30.0  # ask the hub for the node's registries at most this often
BUDGET_S = 5.0  # refresh for at most about this long per poll cycle (at least one registry)
RETRY_S = 600.0  # a failed refresh is retried after this long, or at once on any change
STATUS_KIND = "registry.status"
Seal = Callable[..., Envelope]


@dataclass
class Outcome:
    """One refresh: the new materialisation, or the error that kept it from being built."""

    name: str
    made: Materialised | None = None
    error: str | None = None
    reason: str = ""


@dataclass
class RegistryKeeper:
    folder: Path
    site: str
    state: NodeState
    min_cell_size: int = 10
    definitions: list[RegistryView] | None = None
    _checked: float = field(default=-1e18, init=False)
    _failed: dict[str, tuple[str, float, str]] = field(default_factory=dict, init=False)
    _reported: str | None = field(default=None, init=False)
    _meta: dict[str, tuple[int, Materialised | None]] = field(default_factory=dict, init=False)

    def materialised(self, name: str) -> Materialised | None:
        """A registry file's meta, re-read only when the file changed (a stat per call)."""
        path = registries.file_of(self.folder, name)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            self._meta.pop(name, None)
            return None
        cached = self._meta.get(name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, registries.read(path))
            self._meta[name] = cached
        return cached[1]

    # --- what is due --------------------------------------------------------------------

    def due(self, definition: RegistryView, made: Materialised | None,
            store_version: float | None) -> str | None:
        """Why ``definition`` needs a refresh now, or None."""
        if made is None:
            return "not materialised yet"
        if (made.version, made.digest) != (definition.version, definition.digest):
            return f"new version v{definition.version}"
        if definition.refresh.on_ingest and made.store_version != store_version:
            return "the store was re-ingested"
        age = self.state.clock.now() - made.refreshed_at
        if age >= timedelta(hours=definition.refresh.every_hours):
            return f"scheduled (every {definition.refresh.every_hours} h)"
        return None

    def _blocked(self, definition: RegistryView, store_version: float | None) -> bool:
        failed = self._failed.get(definition.name)
        key = f"{definition.digest}:{store_version}"
        return (failed is not None and failed[0] == key
                and time.monotonic() - failed[1] < RETRY_S)

    # --- refreshing ---------------------------------------------------------------------

    def refresh(self, con: Any, definition: RegistryView, store_version: float | None,
                reason: str = "asked") -> Outcome:
        """Materialise one registry now; a failure is kept (and reported), never raised."""
        k = max(self.min_cell_size, self.state.policy().min_cell_size)
        research = consent.build_filter(self.state, "research")
        try:
            made = registries.materialise(con, definition, self.folder, site=self.site, k=k,
                                          store_version=store_version, consent=research,
                                          clock=self.state.clock)
        except Exception as exc:  # one bad registry must not stop the others or the node
            log.exception("registry %s v%s: refresh failed", definition.name, definition.version)
            message = f"{type(exc).__name__}: {exc}"[:2000]
            self._failed[definition.name] = (f"{definition.digest}:{store_version}",
                                             time.monotonic(), message)
            audit.record(self.state, "registry.refresh", f"registry:{definition.name}",
                         {"version": definition.version, "digest": definition.digest,
                          "reason": reason, "error": message})
            return Outcome(definition.name, error=message, reason=reason)
        self._failed.pop(definition.name, None)
        # The node's own ledger says what it computed over its data, and from which store.
        audit.record(self.state, "registry.refresh", f"registry:{made.name}",
                     {"version": made.version, "digest": made.digest, "reason": reason,
                      "persons": made.persons, "rows": made.rows, "size": made.size,
                      "store_version": store_version})
        log.info("registry %s v%s refreshed (%s): %d persons, %d dataset rows in %.2fs",
                 made.name, made.version, reason, made.persons, made.rows, made.seconds)
        return Outcome(definition.name, made=made, reason=reason)

    def refresh_due(self, con: Any, store_version: float | None, *,
                    names: list[str] | None = None, force: bool = False,
                    budget: float | None = BUDGET_S) -> list[Outcome]:
        """Refresh what is due (or, with ``force``, every named registry) within ``budget``."""
        started, done = time.monotonic(), list[Outcome]()
        for definition in self.definitions or []:
            if names is not None and definition.name not in names:
                continue
            made = self.materialised(definition.name)
            reason = "asked" if force else self.due(definition, made, store_version)
            if reason is None or (not force and self._blocked(definition, store_version)):
                continue
            if done and budget is not None and time.monotonic() - started >= budget:
                break  # the rest next cycle: tasks must not wait long
            done.append(self.refresh(con, definition, store_version, reason))
        return done

    # --- definitions from the hub -------------------------------------------------------

    def set_definitions(self, definitions: list[RegistryView]) -> list[str]:
        """Keep these definitions; delete files of registries no longer listed."""
        self.definitions = sorted(definitions, key=lambda d: d.name)
        if self.definitions or self.folder.is_dir():  # no folder for a node with none
            registries.save_definitions(self.folder, self.definitions)
        listed = {d.name for d in self.definitions}
        dropped = [m.name for m in registries.materialised(self.folder) if m.name not in listed]
        for name in dropped:
            registries.drop(self.folder, name)
            log.info("registry %s: this node no longer takes part; its file was deleted", name)
        return dropped

    def load_cached(self) -> None:
        self.definitions = registries.load_definitions(self.folder)

    # --- reporting ----------------------------------------------------------------------

    def status(self) -> list[ReportedRegistry]:
        """Every listed registry as the node has it now (what the hub is told)."""
        out = []
        for definition in self.definitions or []:
            made = self.materialised(definition.name)
            failed = self._failed.get(definition.name)
            out.append(ReportedRegistry(
                name=definition.name,
                version=made.version if made else None, digest=made.digest if made else None,
                size=made.size if made else None,
                dataset_size=made.dataset_size if made else None,
                refreshed_at=made.refreshed_at if made else None,
                error=failed[2] if failed else None))
        return out

    def report(self, client: Any, seal: Seal, *, always: bool = False) -> bool:
        """Send the status if it changed since the last report (or ``always``)."""
        payload = {"registries": [r.model_dump(mode="json") for r in self.status()]}
        marker = digest(payload)
        if not always and marker == self._reported:
            return False
        client.report_registries(seal(STATUS_KIND, payload))
        self._reported = marker
        return True

    # --- the agent's cycle --------------------------------------------------------------

    def sync(self, client: Any, connection: Callable[[], Any], store_version: float | None,
             seal: Seal) -> list[Outcome]:
        """One poll cycle's registry work (see the module docstring)."""
        changed = False
        if time.monotonic() - self._checked >= CHECK_S:
            before = [(d.name, d.version) for d in self.definitions or []]
            self._checked = time.monotonic()  # a failing hub is asked again after CHECK_S
            self.set_definitions(client.registries())
            changed = before != [(d.name, d.version) for d in self.definitions or []]
        if not self.definitions:
            return []
        due = any(self.due(d, self.materialised(d.name), store_version) is not None
                  and not self._blocked(d, store_version) for d in self.definitions)
        done = self.refresh_due(connection(), store_version) if due else []
        if done or changed or self._reported is None:
            self.report(client, seal)
        return done


def describe(made: Materialised) -> dict[str, Any]:
    """A materialisation as ``node registry list`` prints it."""
    return {"name": made.name, "version": made.version, "persons": made.persons,
            "dataset_rows": made.rows, "size": made.size, "dataset_size": made.dataset_size,
            "refreshed_at": iso(made.refreshed_at), "seconds": made.seconds,
            "store_version": made.store_version, "file": str(made.path)}
