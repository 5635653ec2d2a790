"""The KPI report's ledger verification: between full passes it resumes over what was
appended, so the entry count is always current and tampering with new entries is seen at
once; an edit of an older entry is found by the next full pass."""

from __future__ import annotations

from hubkit import Space, execute_sql

from healthspace.demo_data import showcase_cohort


def _ledger(space: Space) -> dict:
    return space.hub.ok("GET", "/kpi", space.auditor, params={"period": "2025-03"})[
        "safety"]["ledger"]


def _entries(space: Space) -> list[dict]:
    return space.hub.ok("GET", "/audit/entries?limit=1000", space.auditor)


def _tamper(space: Space, seq: int) -> None:
    execute_sql(space.hub, "UPDATE ledger_entries SET actor = 'mallory' WHERE seq = :seq",
                {"seq": seq})


def _submit(space: Space) -> None:
    space.hub.submit(space.alice, analysis="cohort_count", cohort=showcase_cohort(),
                     nodes=["node-a"])


def test_between_full_passes_new_entries_are_counted_and_checked(space: Space) -> None:
    check = space.hub.client.app.state.hub.ledger_check
    check.full_every = 3600.0
    first = _ledger(space)
    assert first["ok"] and first["full_check_at"] is not None
    _submit(space)
    second = _ledger(space)
    assert second["ok"] and second["entries"] == len(_entries(space)) > first["entries"]
    assert second["full_check_at"] == first["full_check_at"]  # resumed, not walked again
    # an edit among entries appended since the last pass is caught by the next read
    _submit(space)
    newest = _entries(space)[-1]["seq"]
    _tamper(space, newest)
    caught = _ledger(space)
    assert caught["ok"] is False and f"entry {newest}" in caught["problem"]


def test_an_older_edit_is_found_by_the_next_full_pass(space: Space) -> None:
    check = space.hub.client.app.state.hub.ledger_check
    check.full_every = 3600.0
    _submit(space)
    assert _ledger(space)["ok"]
    _tamper(space, 1)
    assert _ledger(space)["ok"]  # resumed: entry 1 is not walked again
    check.full_every = 0.0  # the full pass is due
    found = _ledger(space)
    assert found["ok"] is False and "entry 1: hash does not match" in found["problem"]
    check.full_every = 3600.0
    assert _ledger(space)["ok"] is False  # a failed ledger stays failed (walked in full)
