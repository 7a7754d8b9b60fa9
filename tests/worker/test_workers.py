"""Several workers: two worker processes on PostgreSQL share 20 portals; the leases see to it that
nothing is done twice (counted in each devportal's call log), with the portals' real limits on."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from sqlalchemy import func, select

from addon import rules
from addon.models import JobRun, StoredEvent, TrackedEntity
from tests.worker.conftest import DAY0, at
from tests.worker.simulation import prepare, worker_env, writes_per_client


@pytest.mark.slow
def test_two_worker_processes_share_twenty_portals_and_do_nothing_twice(portal_factory, fast_services):
    if fast_services.settings.is_sqlite:
        pytest.skip("several workers share the work on PostgreSQL; on SQLite one worker runs")
    portals = [portal_factory(limits=True) for _ in range(20)]
    for i, h in enumerate(portals):
        prepare(h, seed=100 + i, contacts=60, companies=10)
        # A manager's change waiting in the inbox: the worker applies it before the daily run.
        h.clock(at(DAY0, 9, 10))
        today, _ = rules.decay_through(h.options(), rules.entity_of(h.row("contact", 1)), DAY0)
        h.manager_sets("contact", 1, "WARM" if today.status == "HOT" else "HOT")
        h.chosen = h.dp.records["contact"][1]["UF_CRM_NEZABYT_STATUS"]
        assert h.dp.wait_for_deliveries(10)
        h.clock(at(DAY0, 9, 30))
    env = worker_env(fast_services)
    # The add-on's own pace as in production: under each portal's 2 requests/s.
    env.pop("NEZABYT_PORTAL_RPS")
    env.pop("NEZABYT_PORTAL_BURST")
    command = [sys.executable, "-m", "addon", "worker", "--once", "--now", at(DAY0, 9, 30).isoformat()]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err.decode()[-3000:]
    runs = [int(out.decode().split("daily runs ")[1].split(",")[0]) for out, _ in outputs]
    assert sum(runs) == 20  # each portal's day run once, by one of the two

    with fast_services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(JobRun).where(
            JobRun.kind == "daily", JobRun.status == "done")) == 20
        # The managers' changes waiting before the run were applied (what is pending now is the
        # echo of the run's own writes, delivered after it).
        assert s.scalar(select(func.count()).select_from(StoredEvent).where(
            StoredEvent.event_name == "ONCRMCONTACTUPDATE", StoredEvent.entity_id == 1,
            StoredEvent.processed_at.is_not(None))) >= 20
        # Nothing left due on the day: every portal's run decayed all it had to.
        assert s.scalar(select(func.count()).select_from(TrackedEntity).where(TrackedEntity.due_on <= DAY0)) == 0
    for h in portals:
        writes = writes_per_client(h)
        assert writes and max(writes.values()) == 1
        tags = Counter(c["params"].get("TAG") for c in h.calls("im.notify.system.add", in_batch=True))
        assert tags and max(tags.values()) == 1
        assert not [c for c in h.dp.calls if c.get("status") == 503]
        row = h.row("contact", 1)
        assert h.dp.records["contact"][1]["UF_CRM_NEZABYT_STATUS"] == h.chosen
        assert (row.status_set_on, row.status) == (DAY0, h.portal_status("contact", 1))
