"""Scale out: three worker processes share the portals through PostgreSQL. Each portal's daily run
happens exactly once, the work spreads over all three, and a worker killed with SIGKILL in the
middle of its runs changes the final state of nothing: its leases expire, another worker resumes
its portals, and every portal ends exactly as the same portal run by a single worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from sqlalchemy import func, select, update

from addon.models import PORTAL_ACTIVE, PORTAL_NEEDS_REAUTH, JobRun, Portal
from tests.worker.conftest import DAY0, at
from tests.worker.simulation import outcome, prepare, worker_env, writes_per_client

PORTALS = 6
LEASE_SECONDS = 6
CONCURRENCY = 2  # each worker holds two portals at once: the victim two, each survivor two more


def _only_active(services, portals) -> None:
    """The workers serve every active portal in the database: keep the other set out of it."""
    ids = [h.portal_id for h in portals]
    with services.sessions() as s:
        s.execute(update(Portal).values(status=PORTAL_NEEDS_REAUTH))
        s.execute(update(Portal).where(Portal.id.in_(ids)).values(status=PORTAL_ACTIVE))
        s.commit()


def _worker(env, now):
    return subprocess.Popen([sys.executable, "-m", "addon", "worker", "--once", "--now", now.isoformat()],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _runs_of(services, owner: str) -> list[int]:
    with services.sessions() as s:
        return list(s.scalars(select(JobRun.portal_id).where(JobRun.kind == "daily", JobRun.owner == owner,
                                                             JobRun.status == "running")))


def _done(services, portals) -> int:
    with services.sessions() as s:
        return s.scalar(select(func.count()).select_from(JobRun).where(
            JobRun.kind == "daily", JobRun.status == "done", JobRun.portal_id.in_([h.portal_id for h in portals])))


@pytest.mark.slow
def test_three_workers_run_each_day_once_spread_the_work_and_survive_a_sigkill(portal_factory, fast_services):
    if fast_services.settings.is_sqlite:
        pytest.skip("several workers share the portals on PostgreSQL; on SQLite one worker runs")
    now = at(DAY0, 9, 30)
    reference = [portal_factory(limits=True) for _ in range(PORTALS)]
    tested = [portal_factory(limits=True) for _ in range(PORTALS)]
    for i, (ref, h) in enumerate(zip(reference, tested)):
        for portal in (ref, h):
            prepare(portal, seed=300 + i, contacts=150, companies=15)
            portal.dp.set_faults(latency_ms=120)  # a real portal's distance: runs last a while
    env = worker_env(fast_services)
    env.pop("NEZABYT_PORTAL_RPS")  # the add-on's own pace as in production
    env.pop("NEZABYT_PORTAL_BURST")
    env.update(NEZABYT_LEASE_SECONDS=str(LEASE_SECONDS), NEZABYT_WORKER_CONCURRENCY=str(CONCURRENCY))

    # The reference: one worker alone.
    _only_active(fast_services, reference)
    single = _worker(env, now)
    out, err = single.communicate(timeout=300)
    assert single.returncode == 0, err.decode()[-3000:]
    assert _done(fast_services, reference) == PORTALS

    # Three workers; the first is killed in the middle of its runs (it has started daily runs and
    # its portals' writes are under way).
    _only_active(fast_services, tested)
    procs = [_worker(env, now)]
    victim = f"{os.uname().nodename}:{procs[0].pid}"
    deadline = time.monotonic() + 60
    while not _runs_of(fast_services, victim) and time.monotonic() < deadline and procs[0].poll() is None:
        time.sleep(0.05)  # waiting for the victim to take portals, not for a clock
    procs += [_worker(env, now) for _ in range(2)]
    while (not any(h.calls("batch") for h in tested if h.portal_id in _runs_of(fast_services, victim))
           and time.monotonic() < deadline and procs[0].poll() is None):
        time.sleep(0.02)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].communicate()
    assert procs[0].returncode == -signal.SIGKILL
    assert _runs_of(fast_services, victim), "the victim had no run left unfinished"
    for p in procs[1:]:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    # The dead worker's portals come back once its leases expire: the next workers resume them.
    rounds = 0
    while _done(fast_services, tested) < PORTALS and rounds < 5:
        time.sleep(LEASE_SECONDS + 1)
        again = [_worker(env, now) for _ in range(2)]
        for p in again:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err.decode()[-3000:]
        rounds += 1
    assert _done(fast_services, tested) == PORTALS
    for h in tested:
        h.dp.wait_for_deliveries(30)

    with fast_services.sessions() as s:
        owners = Counter(s.scalars(select(JobRun.owner).where(
            JobRun.kind == "daily", JobRun.portal_id.in_([h.portal_id for h in tested]))))
    assert sum(owners.values()) == PORTALS  # one run per portal and day
    # The work spread over the three: a run keeps the worker that started it as its owner, the
    # victim's two included (resumed by others after its leases expired). With two slots each,
    # the victim holds two portals and the survivors, started together, take two each.
    assert victim in owners, owners
    assert len(owners) >= 3, owners

    for ref, h in zip(reference, tested):
        assert outcome(h) == outcome(ref)  # every client's status and every message, as one worker left them
        assert writes_per_client(h) == writes_per_client(ref)
        assert max(writes_per_client(h).values()) == 1  # no client written twice
        tags = Counter(c["params"].get("TAG") for c in h.calls("im.notify.system.add", in_batch=True))
        assert tags and max(tags.values()) == 1  # no message sent twice
