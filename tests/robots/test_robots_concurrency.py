"""Several workers on PostgreSQL: every robot call and every timer breach is executed once."""
from __future__ import annotations

import threading

import pytest

from addon.services import build_services
from addon.robots.runner import fire_due_timers, process_robot_calls


def run_in_workers(world, job, workers=3):
    """`job(services)` in `workers` threads at once, each with its own Services (its own pool)."""
    fleet = [build_services(world.services.settings) for _ in range(workers)]
    barrier = threading.Barrier(workers)
    results, errors = [], []

    def work(services):
        try:
            barrier.wait(timeout=10)
            results.append(job(services))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in fleet]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in fleet:
        s.dispose()
    assert not errors, errors
    return results


def test_parallel_workers_execute_each_call_and_each_breach_once(world):
    if world.services.settings.is_sqlite:
        pytest.skip("several workers run on PostgreSQL only; on SQLite there is one worker")
    m1, _, m3, m4 = world.managers
    pool = {"mode": "round_robin", "users": [m1, m3, m4]}
    leads = [world.lead(f"Лид {i}") for i in range(12)]
    for lead in leads:
        world.robot("distribute", "lead", lead, **pool)
    now = world.now()
    done = run_in_workers(world, lambda s: process_robot_calls(s, world.portal_id, now))
    assert sum(done) == 12
    owners = [int(world.record("lead", lead)["ASSIGNED_BY_ID"]) for lead in leads]
    assert sorted(owners.count(u) for u in (m1, m3, m4)) == [4, 4, 4]  # one turn each, no turn twice
    assert len(world.replies("distribute")) == 12

    for lead in leads[:6]:
        world.robot("take_in_work", "lead", lead, minutes=15, max_reassign=3, **pool)
    world.process()
    updates_before = len([c for c in world.portal.calls if c["method"] == "crm.lead.update"])
    world.advance(minutes=16)
    now = world.now()
    fired = run_in_workers(world, lambda s: fire_due_timers(s, now))
    assert sum(fired) == 6
    updates = len([c for c in world.portal.calls if c["method"] == "crm.lead.update"]) - updates_before
    assert updates == 6  # one reassignment per breached lead
