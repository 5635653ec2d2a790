"""The background SLA sweeper flags a late approval without anyone reading a report."""

from __future__ import annotations

import time

from hubkit import Space
from sqlalchemy import select

from healthspace.hub.db.models import SlaBreach
from healthspace.hub.services.sla import SlaSweeper


def test_the_sweeper_flags_a_pending_approval_past_its_target(space: Space) -> None:
    hub = space.hub
    hub.publish_policy(space.node_a, {"level": "L2", "version": 2,
                                      "sla": {"approval_hours": 1}})
    study = hub.submit(space.alice, nodes=["node-a"])
    assert study["status"] == "awaiting_approval"
    state = hub.client.app.state.hub  # type: ignore[attr-defined]
    hub.clock.advance(minutes=90)
    sweeper = SlaSweeper(state.sessions, hub.clock, 0.05)
    sweeper.start()
    try:
        deadline, found = time.monotonic() + 10, []
        while not found and time.monotonic() < deadline:
            with state.sessions() as session:
                found = list(session.scalars(select(SlaBreach)))
            time.sleep(0.05)
    finally:
        sweeper.stop()
    assert [(b.study_id, b.kind, b.open, b.target_seconds, b.actual_seconds)
            for b in found] == [(study["id"], "approval", True, 3600.0, 5400.0)]
    events = [e for e in hub.study(space.alice, study["id"])["timeline"]
              if e["event"] == "sla_breach"]
    assert len(events) == 1 and events[0]["node"] == "node-a"
    SlaSweeper(state.sessions, hub.clock, None).start()  # off: starts nothing
