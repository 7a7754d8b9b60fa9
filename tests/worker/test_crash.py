"""Crash safety: a worker killed with SIGKILL in the middle of a daily run, then run again, ends
exactly where an uninterrupted run ends — no client written twice, no digest sent twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.worker.conftest import DAY0, at
from tests.worker.simulation import outcome, prepare, worker_env, writes_per_client


@pytest.mark.slow
def test_sigkill_during_a_daily_run_then_rerun_equals_an_uninterrupted_run(portal_factory):
    reference, victim = portal_factory(), portal_factory()
    prepare(reference)
    prepare(victim)
    reference.daily(at(DAY0, 9, 30))
    expected_statuses, expected_notes = outcome(reference)
    assert sum(1 for v in writes_per_client(reference).values()) > 200

    # The victim's portal answers slowly, so the run is still writing when it is killed.
    victim.dp.set_faults(latency_ms=250)
    proc = subprocess.Popen([sys.executable, "-m", "addon", "decay", "--portal", victim.dp.member_id,
                             "--now", at(DAY0, 9, 30).isoformat()], env=worker_env(victim.services),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(victim.calls("batch")) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # waiting for the worker to be mid-run, not for a clock
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    victim.dp.wait_for_deliveries(30)
    assert victim.dp.wait_idle(30)  # the batch the killed worker had sent lands before the rerun looks
    half = writes_per_client(victim)
    assert 0 < len(half) < len(writes_per_client(reference)), "killed before or after the writes"

    victim.dp.set_faults(latency_ms=0)
    victim.daily(at(DAY0, 9, 45))
    statuses, notes = outcome(victim)
    assert statuses == expected_statuses
    assert notes == expected_notes
    assert writes_per_client(victim) == writes_per_client(reference)
    assert max(writes_per_client(victim).values()) == 1
    tags = Counter(c["params"].get("TAG") for c in victim.calls("im.notify.system.add", in_batch=True))
    assert tags and max(tags.values()) == 1


@pytest.mark.slow
def test_the_long_running_worker_does_the_day_run_and_stops_cleanly_on_sigterm(harness):
    from sqlalchemy import select

    from addon.models import JobRun

    h = harness
    h.dp.seed(departments=2, managers=4, contacts=10, companies=2, months_of_calls=0, deals=0, rng_seed=2)
    h.install(notify_time="00:00")  # due as soon as the worker looks (it runs on the real clock)
    env = worker_env(h.services)
    proc = subprocess.Popen([sys.executable, "-m", "addon", "worker"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    done = False
    while not done and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # waiting for the worker's first cycle, not for a clock
        with h.services.sessions() as s:
            done = s.scalar(select(JobRun).where(JobRun.kind == "daily", JobRun.status == "done")) is not None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert done, err.decode()[-2000:]
    assert proc.returncode == 0, err.decode()[-2000:]
