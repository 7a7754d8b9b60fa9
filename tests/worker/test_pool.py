"""The worker's pool: portals side by side, one unit per portal at a time, urgent units first, a
long run in slices; one portal's 503 storm or exception never stops or delays the others; a
portal's events during its own daily run wait no longer than one chunk of it."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from addon import outbox
from addon.models import JobRun, PortalBudget, StoredEvent
from tests.worker.conftest import DAY0, at
from worker import jobs
from worker.pool import AGAIN, PortalPool, Unit


def test_units_run_side_by_side_and_one_failure_stays_its_own():
    pool = PortalPool(8)
    finished, errors = [], []

    def work(pid):
        def run():
            time.sleep(0.3)  # a portal's REST wait
            if pid == 3:
                raise RuntimeError("portal 3 is broken")
            finished.append(pid)
        return run

    t0 = time.monotonic()
    ran = pool.run([Unit(pid, work(pid)) for pid in range(8)], on_error=lambda u, e: errors.append((u.portal_id, e)))
    took = time.monotonic() - t0
    assert ran == 8
    assert sorted(finished) == [0, 1, 2, 4, 5, 6, 7]
    assert [(pid, str(e)) for pid, e in errors] == [(3, "portal 3 is broken")]
    assert took < 1.0  # side by side: not 8 x 0.3 s


def test_the_pool_is_bounded_and_never_runs_one_portal_twice_at_once():
    pool = PortalPool(3)
    lock = threading.Lock()
    now_running, peak, per_portal = set(), [0], {}

    def work(pid, turns):
        def run():
            with lock:
                assert pid not in now_running
                now_running.add(pid)
                peak[0] = max(peak[0], len(now_running))
            time.sleep(0.05)
            with lock:
                now_running.discard(pid)
                per_portal[pid] = per_portal.get(pid, 0) + 1
                return AGAIN if per_portal[pid] < turns else None
        return run

    pool.run([Unit(pid, work(pid, 3)) for pid in range(10)])
    assert peak[0] == 3
    assert per_portal == {pid: 3 for pid in range(10)}  # AGAIN queued each portal again


def test_urgent_units_go_before_a_long_run_takes_its_next_turn():
    pool = PortalPool(1)
    order = []
    turns = {"big": 0}

    def big():
        order.append("big")
        turns["big"] += 1
        return AGAIN if turns["big"] < 3 else None

    def small(name):
        return lambda: order.append(name)

    added = []

    def refill():
        # An event burst for another portal comes in while the big run is going.
        if turns["big"] >= 1 and not added:
            added.append(1)
            return [Unit(2, small("events"), urgent=True)]
        return []

    pool.run([Unit(1, big), Unit(3, small("small"))], refill=refill, refill_every=0.0)
    # The big portal takes turns: the events (urgent) and the small portal run between its slices.
    assert order == ["big", "events", "small", "big", "big"]


@pytest.fixture
def three_portals(portal_factory):
    from tests.worker.simulation import prepare

    portals = [portal_factory() for _ in range(3)]
    for i, h in enumerate(portals):
        prepare(h, seed=40 + i, contacts=40, companies=5)
        h.clock(at(DAY0, 9, 10))
        h.manager_sets("contact", 1, "HOT")
        assert h.dp.wait_for_deliveries(10)
        h.clock(at(DAY0, 9, 30))
    return portals


def _done_runs(services) -> dict[int, JobRun]:
    with services.sessions() as s:
        return {j.portal_id: j for j in s.scalars(select(JobRun).where(JobRun.kind == "daily", JobRun.status == "done"))}


def _pending(services, portal_id) -> int:
    with services.sessions() as s:
        return len(s.scalars(select(StoredEvent.id).where(StoredEvent.portal_id == portal_id,
                                                          StoredEvent.processed_at.is_(None))).all())


def test_a_portals_503_storm_does_not_delay_the_others(three_portals, fast_services, monkeypatch):
    storm, *others = three_portals
    # Every request of one portal: 503. The client backs off 0.5, 1, 2 s (three tries here instead of
    # the five of production, 15.5 s, to keep the suite short) before giving that call up.
    monkeypatch.setattr("addon.bitrix.rest.MAX_503_RETRIES", 3)
    monkeypatch.setattr("fast_bitrix24.srh.MAX_RETRIES", 5)  # batches: fast-bitrix24's own back-off, shortened too
    storm.dp.set_faults(fail_next=10_000, fail_status=503)
    t0 = time.monotonic()
    report = jobs.drain_and_run(fast_services, at(DAY0, 9, 30))
    took = time.monotonic() - t0
    runs = _done_runs(fast_services)
    assert {h.portal_id for h in others} <= set(runs) and storm.portal_id not in runs
    assert report.daily_runs == 2
    for h in others:
        assert _pending(fast_services, h.portal_id) == 0 or h.dp.wait_for_deliveries(5)
        # Finished while the storm was still being ridden out (3.5 s of back-off per call).
        assert (runs[h.portal_id].finished_at - runs[h.portal_id].started_at).total_seconds() < 3
    assert any(f"portal {storm.portal_id}" in e for e in report.errors)
    assert took >= 3.5  # the storm's portal did ride it out, on its own thread
    with fast_services.sessions() as s:
        assert "SERVER_UNAVAILABLE" in s.get(PortalBudget, storm.portal_id).last_error or \
            "QUERY_LIMIT_EXCEEDED" in s.get(PortalBudget, storm.portal_id).last_error
        assert s.get(PortalBudget, storm.portal_id).limited_at is not None


def test_a_portals_exception_does_not_stop_the_others(three_portals, fast_services, monkeypatch):
    broken, *others = three_portals
    from worker import events

    real = events.process_events

    def process(services, portal_id, now, **kw):
        if portal_id == broken.portal_id:
            raise RuntimeError("a bug met on this portal's data")
        return real(services, portal_id, now, **kw)

    monkeypatch.setattr(events, "process_events", process)
    report = jobs.drain_and_run(fast_services, at(DAY0, 9, 30))
    runs = _done_runs(fast_services)
    assert set(runs) == {h.portal_id for h in others}
    assert report.errors == [f"cycle portal {broken.portal_id}: RuntimeError: a bug met on this portal's data"]
    monkeypatch.setattr(events, "process_events", real)
    # Fixed: the next pass does its work, and its status line no longer shows the error.
    report = jobs.drain_and_run(fast_services, at(DAY0, 9, 40))
    assert report.errors == [] and broken.portal_id in _done_runs(fast_services)
    with fast_services.sessions() as s:
        assert s.get(PortalBudget, broken.portal_id).last_error is None


def test_events_during_a_long_daily_run_are_applied_between_its_chunks(harness, fast_services, monkeypatch):
    from tests.worker.simulation import prepare

    monkeypatch.setattr("worker.daily.PLAN_CHUNK", 20)
    h = harness
    prepare(h, seed=5, contacts=300, companies=0)
    real_send = outbox.send_outbox
    sent = []

    def send(services, client, portal_id, *a, **kw):
        n = real_send(services, client, portal_id, *a, **kw)
        sent.append(n)
        if len(sent) == 2:  # the run is under way: a manager edits a card
            h.manager_sets("contact", 299, "WARM")
            assert h.dp.wait_for_deliveries(10)
        return n

    monkeypatch.setattr(outbox, "send_outbox", send)
    report = jobs.portal_cycle(fast_services, h.portal_id, at(DAY0, 9, 30), daily=True)
    assert report.daily_runs == 1
    with fast_services.sessions() as s:
        job = s.scalars(select(JobRun).where(JobRun.kind == "daily")).one()
        ev = s.scalars(select(StoredEvent).where(StoredEvent.entity_id == 299,
                                                 StoredEvent.event_name == "ONCRMCONTACTUPDATE")).first()
        assert ev.processed_at is not None and ev.processed_at < job.finished_at
        chunks_after = job.summary["decayed"]
    assert chunks_after > 40  # the run had more chunks to go when the event was applied
    assert h.row("contact", 299).status == "WARM" and h.portal_status("contact", 299) == "WARM"


def test_a_long_daily_run_goes_in_slices_and_ends_as_one_run(harness, fast_services, monkeypatch):
    from tests.worker.simulation import outcome, prepare

    monkeypatch.setattr("worker.daily.PLAN_CHUNK", 20)
    monkeypatch.setattr(jobs, "DAILY_SLICE_SECONDS", 0.0)  # every chunk ends a slice
    h = harness
    prepare(h, seed=6, contacts=200, companies=0)
    turns = []
    real = jobs.portal_unit

    def unit(*a, **kw):
        result = real(*a, **kw)
        turns.append(result)
        return result

    monkeypatch.setattr(jobs, "portal_unit", unit)
    report = jobs.drain_and_run(fast_services, at(DAY0, 9, 30))
    assert report.daily_runs == 1 and report.errors == []
    assert turns.count("again") >= 2 and turns[-1] is None
    with fast_services.sessions() as s:
        job = s.scalars(select(JobRun).where(JobRun.kind == "daily")).one()
        assert job.status == "done"
    statuses, _ = outcome(h)
    rows = [h.row(k, i) for (k, i) in statuses]
    assert all(r is None or r.due_on is None or r.due_on > DAY0 for r in rows)  # every due row decayed
    assert all(r is None or h.portal_status(r.entity_type, r.entity_id) == r.status for r in rows)


def test_worker_status_shows_each_portals_work(three_portals, fast_services, monkeypatch):
    import json

    from click.testing import CliRunner

    from addon.cli import main

    broken, ok, _ = three_portals
    monkeypatch.setattr("addon.bitrix.rest.MAX_503_RETRIES", 1)  # one back-off is enough to be seen
    monkeypatch.setattr("fast_bitrix24.srh.MAX_RETRIES", 1)
    broken.dp.set_faults(fail_next=10_000, fail_status=503)
    jobs.drain_and_run(fast_services, at(DAY0, 9, 30))
    env = {"DATABASE_URL": fast_services.settings.database_url, "NEZABYT_SECRET_KEY": fast_services.settings.secret_key}
    result = CliRunner().invoke(main, ["worker", "status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = {r["portal_id"]: r for r in json.loads(result.output)}
    good = rows[ok.portal_id]
    assert good["daily"]["status"] == "done" and good["daily"]["started"] and good["daily"]["finished"]
    assert good["daily"]["due_at"].startswith("2026-03-02 06:00")  # 09:00 in Moscow
    assert good["last_event_processed"] and good["calls"] > 0 and good["lease"] == []
    assert not good["rate_limited"] and good["error"] is None and good["plan"] == "ru_project"
    bad = rows[broken.portal_id]
    assert bad["rate_limited"] and "QUERY_LIMIT_EXCEEDED" in bad["error"]
    text = CliRunner().invoke(main, ["worker", "status", "--portal", ok.dp.member_id], env=env).output
    assert f"portal {ok.portal_id}" in text and "last daily run: 2026-03-02 done" in text
    assert "lease: free" in text and "parked: no" in text


def test_a_pass_imports_what_the_units_need_before_the_pool_starts():
    """The pool's threads must not queue on a first import's lock: drain_and_run imports the units'
    modules in its own thread first (checked in a fresh interpreter, where nothing is imported yet)."""
    import subprocess
    import sys

    code = ("import sys, worker.jobs as j\n"
            "before = [m for m in j.UNIT_MODULES if m in sys.modules]\n"
            "j.warm_imports()\n"
            "missing = [m for m in j.UNIT_MODULES if m not in sys.modules]\n"
            "print(len(before), len(j.UNIT_MODULES), missing)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, total, missing = out.stdout.strip().split(" ", 2)
    assert int(before) < int(total)  # a fresh worker has not imported them all by itself
    assert missing == "[]"
