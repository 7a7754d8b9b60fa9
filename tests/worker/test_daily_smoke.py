"""First end-to-end checks of the daily run against the devportal."""
from __future__ import annotations

import datetime as dt

from tests.worker.conftest import DAY0, at


def test_reindex_then_daily_run_decays_writes_and_digests(harness):
    h = harness
    h.dp.seed(departments=2, managers=6, contacts=40, companies=5, months_of_calls=0, deals=0, rng_seed=3)
    h.install()
    # Statuses as an admin set them before: 10 NEW ones set 12 days ago, 5 HOT ones today.
    for cid in range(1, 11):
        h.put_status("contact", cid, "NEW", at(DAY0 - dt.timedelta(days=12), 10))
    for cid in range(11, 16):
        h.put_status("contact", cid, "HOT", at(DAY0, 7))
    report = h.reindex(at(DAY0, 8))
    assert report.tracked == 15
    assert h.row("contact", 1).due_on == DAY0 - dt.timedelta(days=2)
    summary = h.daily(at(DAY0, 9))
    assert summary.decayed == 10
    assert [h.portal_status("contact", c) for c in range(1, 11)] == ["LOST"] * 10
    assert [h.portal_status("contact", c) for c in range(11, 16)] == ["HOT"] * 5
    managers = {int(h.dp.records["contact"][c]["ASSIGNED_BY_ID"]) for c in range(1, 11)}
    digests = [n for n in h.dp.notifications]
    assert len(digests) >= len(managers)
    # A second run the same day does nothing at all.
    before = len(h.dp.calls)
    again = h.daily(at(DAY0, 10))
    assert again.already_done
    assert len(h.dp.calls) == before
