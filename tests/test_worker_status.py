"""`nezabyt worker status` as text: one block per portal, its limits from the portal's budget."""
from __future__ import annotations

import datetime as dt

from addon.worker_status import status_text


def _row(**over):
    row = {"portal_id": 7, "domain": "a.bitrix24.ru", "member_id": "m", "status": "active", "plan": "ru_ent250",
           "rps": "5", "burst": 250, "last_event_processed": dt.datetime(2026, 3, 2, 6, 5, 7), "events_pending": 2,
           "daily": None, "lease": ["cycle: host-a:42"], "calls": 1234, "rate_limited": True,
           "parked_methods": [], "error": None}
    row.update(over)
    return row


def test_a_portal_with_a_budget_shows_its_plan_limits_and_state():
    text = status_text([_row()])
    assert "portal 7 a.bitrix24.ru (active; plan ru_ent250, 5/s burst 250)" in text
    assert "calls made: 1234" in text and "lease: cycle: host-a:42" in text
    assert "parked: rate limit (503)" in text and "last daily run: none yet" in text


def test_a_portal_never_called_has_unknown_limits():
    text = status_text([_row(plan=None, rps=None, burst=None, rate_limited=False, lease=[])])
    assert "(active; plan ?, ?)" in text and "lease: free" in text and "parked: no" in text


def test_no_portals():
    assert status_text([]) == "no portals"
