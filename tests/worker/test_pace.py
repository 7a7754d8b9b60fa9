"""Each portal at its own limit, one budget for all our processes: the plan read from app.info
(Enterprise 5/s burst 250, others 2/s burst 50), and a bucket in the database that two separate
services (as two processes: their own engines) share without overrunning the portal."""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from addon.bitrix import pace
from addon.models import PortalBudget
from addon.services import build_services
from tests.worker.conftest import DAY0, at


@pytest.mark.parametrize("license_code, family, limits", [
    ("de_ent10000", "ent", (5.0, 250)), ("ru_ent250", None, (5.0, 250)), ("de_pro100", "pro", (2.0, 50)),
    ("de_std", "std", (2.0, 50)), ("ru_project", "project", (2.0, 50)), (None, None, (2.0, 50)),
])
def test_the_plan_gives_the_limits_of_bitrix24s_limits_page(license_code, family, limits):
    assert pace.plan_limits(license_code, family) == limits


def test_our_pace_keeps_the_margin_on_every_plan(settings):
    assert pace.our_pace(settings, 2.0, 50) == (2.0, 48.0)
    assert pace.our_pace(settings, 5.0, 250) == (5.0, 248.0)


def test_the_bucket_waits_its_turn_at_the_plans_pace(services, harness):
    h = harness
    h.install()
    waits: list[float] = []
    services.settings = dataclasses.replace(services.settings, portal_rps=2.0, portal_burst=48)
    standard = pace.SharedPace(services, h.portal_id, sleep=waits.append)
    with services.sessions() as s:  # a fresh bucket (the install's calls drained long ago)
        s.get(PortalBudget, h.portal_id).level = 0.0
        s.commit()
    for _ in range(52):
        standard.acquire()
    assert waits[:1] and len(waits) == 4  # 48 at once, then every request waits for its place
    # Each waits half a second more than the one before (2/s), less what drained meanwhile.
    assert 0 < waits[0] <= 0.5
    assert [b - a for a, b in zip(waits, waits[1:])] == pytest.approx([0.5] * 3, abs=0.1)
    pace.store_plan(services, h.portal_id, {"LICENSE": "ru_ent250", "LICENSE_FAMILY": "ent"})
    with services.sessions() as s:
        s.get(PortalBudget, h.portal_id).level = 0.0
        s.commit()
    waits.clear()
    for _ in range(240):
        standard.acquire()
    assert waits == []  # Enterprise: 248 at once
    with services.sessions() as s:
        assert s.get(PortalBudget, h.portal_id).calls >= 292


def test_two_processes_share_one_budget_and_never_overrun_the_portal(harness, settings):
    h = harness
    h.install()
    # A small bucket so the test is quick: the portal takes 6 at once and 20/s; we allow 5 and 20/s.
    h.dp.set_limits(rps=20, burst=6, enabled=True)
    h.dp.set_clock(h.dp.now(), frozen=False)  # the portal's bucket drains on a running clock
    ours = dataclasses.replace(settings, portal_rps=20.0, portal_burst=5)
    web, worker = build_services(ours), build_services(ours)  # two engines, as two processes
    try:
        from addon.bitrix.client import PortalClient

        mark = len(h.dp.calls)
        errors = []

        def calls(services):
            client = PortalClient(services, h.portal_id, sleep=lambda s: errors.append("backed off"))
            for _ in range(20):
                client.call("profile")

        t0 = time.monotonic()
        threads = [threading.Thread(target=calls, args=(s,)) for s in (web, worker)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        assert errors == []
        assert [c["status"] for c in h.dp.calls[mark:]] == [200] * 40
        assert took >= (40 - 5) / 20 - 0.2  # one bucket for both: each alone would take half
    finally:
        web.dispose()
        worker.dispose()


def test_the_worker_reads_a_portals_plan_and_keeps_it(harness, fast_services):
    from worker import jobs

    h = harness
    h.install()
    with fast_services.sessions() as s:  # installed before plans were read
        s.delete(s.get(PortalBudget, h.portal_id))
        s.commit()
    h.dp.set_plan("ru_ent500")
    h.dp.set_limits(enabled=False)
    h.clock(at(DAY0, 9, 30))
    jobs.portal_cycle(fast_services, h.portal_id, at(DAY0, 9, 30), daily=True)
    with fast_services.sessions() as s:
        row = s.get(PortalBudget, h.portal_id)
        assert (row.plan, row.rps, row.burst) == ("ru_ent500", 5.0, 250)
        assert row.plan_read_at is not None and row.calls > 0
    info_calls = len(h.calls("app.info"))
    jobs.portal_cycle(fast_services, h.portal_id, at(DAY0, 9, 40), daily=True)
    assert len(h.calls("app.info")) == info_calls  # read once a day, not every pass
