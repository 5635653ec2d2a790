"""The node agent: long-polls the hub over outbound HTTP, runs tasks, delivers results.

Results go to the state file's outbox before they are posted, and leave it only when the hub
acknowledges them, so a hub restart (or a node restart) neither loses nor duplicates a result;
the hub treats a repeated post as a no-op.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from healthspace import __version__
from healthspace.cdm.store import catalog, open_store
from healthspace.client.http import HubUnavailable
from healthspace.client.sdk import HubClient
from healthspace.core.errors import HealthspaceError, Unauthorized
from healthspace.core.models import Catalog, TaskAssignment
from healthspace.node.runner import run_task
from healthspace.node.state import NodeState

log = logging.getLogger("healthspace.node")


@dataclass
class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    initial: float = 0.2
    maximum: float = 10.0
    _current: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._current = min(self.maximum, self._current * 2 if self._current else self.initial)
        return self._current * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self._current = 0.0


class NodeAgent:
    """One node's loop: publish catalog, flush outbox, fetch a task, run it, repeat."""

    def __init__(
        self,
        *,
        hub: str,
        token: str,
        store: Path,
        state: NodeState,
        site: str,
        poll_wait: float = 20.0,
        min_cell_size: int = 10,
    ) -> None:
        self.client = HubClient(hub, token, timeout=poll_wait + 30)
        self.store = Path(store)
        self.state = state
        self.site = site
        self.poll_wait = poll_wait
        self.min_cell_size = min_cell_size
        self.stop_event = threading.Event()
        self._published_mtime: float | None = None
        self._backoff = Backoff()

    def build_catalog(self) -> Catalog:
        con = open_store(self.store, read_only=True)
        try:
            cat = catalog(con)
        finally:
            con.close()
        return cat.model_copy(
            update={"public_key": self.state.public_key_hex(), "software_version": __version__}
        )

    def _publish_if_changed(self) -> None:
        mtime = self.store.stat().st_mtime
        if mtime != self._published_mtime:
            self.client.publish_catalog(self.build_catalog())
            self._published_mtime = mtime
            log.info("catalog published")

    def _flush_outbox(self) -> None:
        for task_id, body in self.state.pending_results():
            ack = self.client.post_result(task_id, body)
            self.state.ack_result(task_id)
            log.info("result for task %s delivered (duplicate=%s)", task_id, ack.duplicate)

    def _handle(self, task: TaskAssignment) -> None:
        log.info("task %s: study %s round %s %s", task.task_id, task.study_id, task.round,
                 task.analysis)
        stored = self.state.has_result(task.task_id)
        if stored is None:
            result = run_task(
                self.store, task, site=self.site, min_cell_size=self.min_cell_size
            )
            body = result.model_dump(mode="json")
            self.state.put_result(task.task_id, task.study_id, task.round, body)
            self.state.log_run(
                task_id=task.task_id, study_id=task.study_id, round=task.round,
                analysis=task.analysis, consumer=task.consumer, purpose=task.purpose,
                status=result.status.value, records=result.metrics.records,
                seconds=result.metrics.seconds, error=result.error,
            )
            log.info("task %s %s in %.3fs", task.task_id, result.status.value,
                     result.metrics.seconds)
        else:
            # Redelivered after a restart: resend what was computed, do not compute twice.
            self.state.put_result(task.task_id, task.study_id, task.round, stored)
        self._flush_outbox()

    def step(self) -> bool:
        """One poll cycle; returns True when a task was handled."""
        self._publish_if_changed()
        self._flush_outbox()
        task = self.client.next_task(wait=self.poll_wait)
        if task is None:
            return False
        self._handle(task)
        return True

    def run_forever(self) -> None:
        log.info("node %s polling %s", self.site, self.client.http.base_url)
        while not self.stop_event.is_set():
            try:
                self.step()
                self._backoff.reset()
            except Unauthorized:
                log.error("the hub rejected this node's token; stopping")
                raise
            except HubUnavailable as exc:
                delay = self._backoff.next_delay()
                log.warning("hub unavailable (%s); retrying in %.1fs", exc, delay)
                self.stop_event.wait(delay)
            except HealthspaceError as exc:
                delay = self._backoff.next_delay()
                log.error("hub refused a request: %s; retrying in %.1fs", exc, delay)
                self.stop_event.wait(delay)
            except Exception:  # keep serving: one bad cycle must not take the node down
                delay = self._backoff.next_delay()
                log.exception("node cycle failed; retrying in %.1fs", delay)
                self.stop_event.wait(delay)
        self.client.close()

    def stop(self) -> None:
        self.stop_event.set()
