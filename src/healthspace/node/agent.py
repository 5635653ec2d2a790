"""The node agent: long-polls the hub over outbound HTTP, runs tasks, delivers results.

Everything the node sends is a signed envelope. Results go to the state file's outbox before
they are posted and leave it only when the hub acknowledges them, so a hub restart (or a node
restart) neither loses nor duplicates a result; the hub treats a repeated post as a no-op.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthspace import __version__
from healthspace.analyses.similar_features import FeatureCache
from healthspace.cdm.engines import StoreSpec, open_engine
from healthspace.cdm.quality import assess
from healthspace.cdm.store import catalog, open_store
from healthspace.client.http import HubUnavailable
from healthspace.client.sdk import HubClient
from healthspace.core.canonical import digest
from healthspace.core.envelope import Envelope, EnvelopeError, seal, verify_rotation
from healthspace.core.errors import HealthspaceError, Unauthorized
from healthspace.core.models import Catalog, TaskAssignment
from healthspace.node import audit, consent, secagg
from healthspace.node.registries import Shelf, registries_dir
from healthspace.node.registry_refresh import RegistryKeeper
from healthspace.node.runner import execute_task
from healthspace.node.state import NodeState

log = logging.getLogger("healthspace.node")
PREKEY_CHECK_S = 300.0  # also re-check the hub's prekey stock this often
CATALOG_REFRESH_S = 3600.0  # re-publish a database engine's catalogue this often


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
    """One node's loop: publish catalog and policy, refresh the registries that are due,
    flush outbox, fetch a task, run it."""

    def __init__(
        self,
        *,
        hub: str,
        token: str,
        store: Path,
        state: NodeState,
        poll_wait: float = 20.0,
        min_cell_size: int = 10,
        engine: StoreSpec | None = None,
    ) -> None:
        self.client = HubClient(hub, token, timeout=poll_wait + 30)
        self.store = Path(store)
        # None: the DuckDB store file ``store``; else the data holder's database, read in place.
        self.engine = engine.validate() if engine is not None else None
        self.state = state
        self.poll_wait = poll_wait
        self.min_cell_size = min_cell_size
        self.stop_event = threading.Event()
        self._published: tuple[float, str] | None = None
        self._checkpoint_size = -1
        self._con: Any = None  # a DuckDB connection or an engine adapter
        self._con_mtime: float | None = None
        # Similar-patient feature matrices of this connection; rebuilt when the store changes.
        self.features = FeatureCache()
        self._features_version: float | None = None
        self._backoff = Backoff()
        self._prekeys_due = True
        self._prekeys_checked = 0.0
        self._quality: tuple[float, dict[str, Any]] | None = None
        me = self.client.me()
        self.node_id, self.site = me.id, me.name
        # Registries this node takes part in, materialised beside the store (docs/registries.md).
        self.registries = RegistryKeeper(registries_dir(self.store), site=self.site,
                                         state=state, min_cell_size=min_cell_size)

    # --- signing ----------------------------------------------------------------------

    def seal(self, kind: str, payload: dict[str, Any], **ids: Any) -> Envelope:
        return seal(kind, payload, self.state.signing_key(), node_id=self.node_id,
                    clock=self.state.clock, **ids)

    def pin_hub_key(self) -> None:
        """Trust on first use, then follow only rotations the pinned key vouched for."""
        info = self.client.hub_key()
        pinned = self.state.pinned_hub_keys()
        if not pinned:
            first = info["rotations"][0]["old_key"] if info["rotations"] else info["public_key"]
            self.state.pin_hub_key(first)
            pinned = [first]
        for statement in info["rotations"]:
            if statement["old_key"] in pinned:
                new = verify_rotation(statement)
                self.state.pin_hub_key(new)
                pinned.append(new)
        if info["public_key"] not in pinned:
            raise EnvelopeError("the hub's key is not vouched for by the pinned key",
                                field="hub_key")

    # --- publication ----------------------------------------------------------------

    def build_catalog(self) -> Catalog:
        cat = catalog(self.connection())
        k = max(self.min_cell_size, self.state.policy().min_cell_size)
        return cat.model_copy(update={
            "public_key": self.state.public_key_hex(),
            "software_version": __version__,
            "consent_tiers": consent.published_tiers(self.state, k),
            "quality": self._quality_summary(),
        })

    def _store_version(self) -> float:
        """When the CDM changed: the store file's mtime; for a data holder's database, which
        changes without telling the node, the current refresh period."""
        if self.engine is None or self.engine.engine == "duckdb":
            return self._store_file().stat().st_mtime
        return float(int(time.time() // CATALOG_REFRESH_S))

    def _store_file(self) -> Path:
        if self.engine is not None and self.engine.path is not None:
            return self.engine.path
        return self.store

    def _quality_summary(self) -> dict[str, Any] | None:
        """The store's data-quality summary, assessed once per ingest (store file version).

        The quality checks are DuckDB SQL run on the store itself: a node reading another
        engine publishes no summary (docs/engines.md)."""
        if self.engine is not None and self.engine.engine != "duckdb":
            return None
        mtime = self._store_version()
        if self._quality is None or self._quality[0] != mtime:
            try:
                self._quality = (mtime, assess(self.connection()).published())
            except Exception:  # a report must never keep the node from publishing
                log.exception("data-quality assessment failed")
                return None
        return self._quality[1]

    def _publish_if_changed(self) -> None:
        policy = self.state.policy()
        marker = (self._store_version(),
                  policy.model_dump_json() + str(consent.tier_counts(self.state)))
        if marker == self._published:
            return
        cat = self.build_catalog()
        self.client.publish_catalog(self.seal("catalog", cat.model_dump(mode="json")))
        self.client.publish_policy(self.seal("policy", {"policy": policy.model_dump(mode="json")}))
        self._published = marker
        log.info("catalog and policy v%s published", policy.version)

    def _publish_checkpoint(self) -> None:
        """Hand the hub a copy of the ledger head, so a later truncation here is detectable."""
        cp = audit.latest_checkpoint(self.state)
        if cp is None or cp["size"] == self._checkpoint_size:
            return
        self.client.publish_checkpoint(self.seal("ledger.checkpoint", cp))
        self._checkpoint_size = cp["size"]

    def _replenish_prekeys(self) -> None:
        """Keep a stock of one-time secure-aggregation keys at the hub (checked at start and
        after each secure task); drop the private keys of sessions that are over."""
        if not self._prekeys_due and time.monotonic() - self._prekeys_checked < PREKEY_CHECK_S:
            return
        available = self.client.prekey_stock()
        if available < secagg.LOW_WATER:
            fresh = secagg.new_prekeys(self.state, self.site, secagg.BATCH)
            payload = {"prekeys": [p.model_dump(mode="json") for p in fresh]}
            available = self.client.upload_prekeys(self.seal("secagg.prekeys", payload))
            log.info("uploaded %d secure-aggregation prekeys (%d unused at the hub)",
                     len(fresh), available)
        secagg.prune(self.state)
        self._prekeys_due, self._prekeys_checked = False, time.monotonic()

    def _flush_outbox(self) -> None:
        for task_id, body in self.state.pending_results():
            envelope = self.seal("task.result", body["result"], study_id=body["study_id"],
                                 round=body["round"],  # a fresh nonce on every attempt
                                 meter=body.get("meter"))
            ack = self.client.post_result(task_id, envelope)
            self.state.ack_result(task_id)
            log.info("result for task %s delivered (duplicate=%s)", task_id, ack.duplicate)

    # --- work -----------------------------------------------------------------------

    def connection(self) -> Any:
        """A read-only CDM connection kept between tasks: the DuckDB store (reopened after a
        re-ingest) or the engine's adapter (:mod:`healthspace.cdm.engines`), opened once."""
        if self.engine is not None and self.engine.engine != "duckdb":
            if self._con is not None and getattr(self._con, "broken", False):
                self._con.close()  # e.g. the database restarted: a new session
                self._con = None
            if self._con is None:
                self._con = open_engine(self.engine)
            return self._con
        store = self._store_file()
        mtime = store.stat().st_mtime
        if self._con is None or mtime != self._con_mtime:
            if self._con is not None:
                self._con.close()
            self._con, self._con_mtime = open_store(store, read_only=True), mtime
        return self._con

    def _sync_features(self) -> None:
        """After a re-ingest (or a database engine's refresh period): build the lookups'
        feature matrices again right away, so no query pays for it."""
        version = self._store_version()
        if version == self._features_version:
            return
        first, self._features_version = self._features_version is None, version
        if first:
            return
        started = time.perf_counter()
        try:
            built = self.features.rebuild(self.connection())
        except Exception:  # a stale matrix must never outlive the store it came from
            log.exception("rebuilding the similar-patient feature matrices failed")
            self.features = FeatureCache()
            return
        if built:
            log.info("rebuilt %d similar-patient feature matrices in %.2fs", built,
                     time.perf_counter() - started)

    def _sync_registries(self) -> None:
        """Refresh the registries that are due and report them (a few seconds at most per
        cycle, see :mod:`healthspace.node.registry_refresh`); the hub being away is handled
        like any other request, anything else is logged and retried later."""
        try:
            self.registries.sync(self.client, self.connection, self._store_version(), self.seal)
        except (HubUnavailable, Unauthorized):
            raise
        except Exception:  # registries must never keep the node from serving tasks
            log.exception("registry refresh failed")

    def _handle(self, task: TaskAssignment) -> None:
        log.info("task %s: study %s round %s %s", task.task_id, task.study_id, task.round,
                 task.analysis)
        if self.state.has_result(task.task_id) is None:
            self._sync_features()
            execution = execute_task(self._store_file(), task, site=self.site, state=self.state,
                                     min_cell_size=self.min_cell_size,
                                     connection=self.connection(),
                                     feature_cache=self.features,
                                     registries=Shelf(self.registries.folder,
                                                      self._store_version()))
            result, meter = execution.result, execution.meter.model_dump(mode="json")
            body = {"study_id": task.study_id, "round": task.round,
                    "result": result.model_dump(mode="json"), "meter": meter}
            self.state.put_result(task.task_id, task.study_id, task.round, body)
            self.state.log_run(
                task_id=task.task_id, study_id=task.study_id, round=task.round,
                analysis=task.analysis, consumer=task.consumer, purpose=task.purpose,
                status=result.status.value, records=result.metrics.records,
                seconds=result.metrics.seconds, error=result.error, preview=int(task.preview),
            )
            audit.record(
                self.state, "task.run", audit.task_subject(task.study_id, task.round,
                                                           task.task_id),
                {"analysis": task.analysis, "consumer": task.consumer,
                 "purpose": task.purpose, "status": result.status.value,
                 "secagg_session": task.secure.session_id if task.secure else None,
                 "records": result.metrics.records, "error": result.error,
                 "partial_digest": digest(result.partial) if result.partial else None,
                 "meter": meter},
            )
            log.info("task %s %s in %.3fs", task.task_id, result.status.value,
                     result.metrics.seconds)
        else:
            # Redelivered after a restart: resend what was computed, never compute twice.
            self.state.requeue_result(task.task_id)
        self._flush_outbox()
        self._publish_checkpoint()
        if task.secure is not None and secagg.unbound(self.state) < 2 * secagg.LOW_WATER:
            self._prekeys_due = True  # the hub's stock may be running low

    def step(self) -> bool:
        """One poll cycle; returns True when a task was handled."""
        self._publish_if_changed()
        self._sync_features()
        self._sync_registries()
        self._replenish_prekeys()
        self._flush_outbox()
        self._publish_checkpoint()
        task = self.client.next_task(wait=self.poll_wait)
        if task is None:
            return False
        self._handle(task)
        return True

    def run_forever(self) -> None:
        log.info("node %s polling %s", self.site, self.client.http.base_url)
        # Import every vetted analysis now, so a study's first round does not pay for it
        # (seconds on a busy machine: round deadlines are measured from queueing).
        from healthspace.analyses import registry

        registry.names()
        self.pin_hub_key()
        try:
            while not self.stop_event.is_set():
                try:
                    self.step()
                    self._backoff.reset()
                except Unauthorized:
                    log.error("the hub rejected this node's token or signature; stopping")
                    raise
                except HubUnavailable as exc:
                    self._wait(f"hub unavailable ({exc})")
                except HealthspaceError as exc:
                    self._wait(f"hub refused a request: {exc}")
                except Exception:  # keep serving: one bad cycle must not take the node down
                    log.exception("node cycle failed")
                    self._wait("node cycle failed")
        finally:  # also on an interrupt: the open long-poll's connection closes now
            self.client.close()
            if self._con is not None:
                self._con.close()

    def _wait(self, why: str) -> None:
        delay = self._backoff.next_delay()
        log.warning("%s; retrying in %.1fs", why, delay)
        self.stop_event.wait(delay)

    def stop(self) -> None:
        self.stop_event.set()
