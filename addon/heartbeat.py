"""The worker's heartbeat: each worker process stamps its row every few seconds, so `nezabyt
doctor` (run anywhere the database is reachable) can tell whether a worker is alive."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading

from sqlalchemy import delete, func, select, update

from addon.db import unit_of_work
from addon.models import WorkerHeartbeat, naive_utc

log = logging.getLogger(__name__)

# Well inside the minute `doctor` allows, so one late beat (a busy database) is no false alarm.
BEAT_EVERY = dt.timedelta(seconds=15)
# Rows of workers gone for longer than this are dropped by the next beat of any worker: a
# deployment that restarts its workers daily keeps a handful of rows, not one per restart.
FORGET_AFTER = dt.timedelta(days=1)



def beat(services, worker_id: str, now: dt.datetime) -> None:
    """Stamp `worker_id` alive at `now`."""
    at = naive_utc(now)
    with unit_of_work(services.sessions) as session:
        stamped = session.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id)
                                  .values(beat_at=at)).rowcount
        if not stamped:  # a worker id is one process: nobody else inserts it meanwhile
            session.add(WorkerHeartbeat(worker_id=worker_id, beat_at=at))
        session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.beat_at < at - FORGET_AFTER))


def last_beat(services) -> tuple[str, dt.datetime] | None:
    """(worker id, UTC instant) of the most recent beat of any worker, or None if none ever beat."""
    with services.sessions() as session:
        newest = session.scalar(select(func.max(WorkerHeartbeat.beat_at)))
        if newest is None:
            return None
        worker_id = session.scalar(select(WorkerHeartbeat.worker_id).where(WorkerHeartbeat.beat_at == newest)
                                   .limit(1))
    return worker_id, newest.replace(tzinfo=dt.timezone.utc)


def _beat_now(services) -> None:
    try:
        beat(services, services.settings.worker_id, dt.datetime.now(dt.timezone.utc))
    except Exception:  # noqa: BLE001 — a missed beat must not stop the worker; doctor will tell
        log.exception("worker heartbeat failed")


def keep_beating(scheduler, services, every: dt.timedelta = BEAT_EVERY):
    """Add the heartbeat to the worker's scheduler (first beat at once); returns the scheduler."""
    scheduler.add_job(_beat_now, "interval", args=(services,), id="heartbeat", name="worker heartbeat",
                      seconds=every.total_seconds(), max_instances=1, coalesce=True,
                      next_run_time=dt.datetime.now(dt.timezone.utc))
    return scheduler


@contextlib.contextmanager
def beating(services, every: dt.timedelta = BEAT_EVERY):
    """Beat at once, every `every` while the block runs (a daemon thread), and once more at its end:
    `nezabyt worker --once` (a cron-driven worker) is seen alive by `doctor` like the long-running one."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every.total_seconds()):
            _beat_now(services)

    _beat_now(services)
    thread = threading.Thread(target=loop, name="nezabyt-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every.total_seconds())
        _beat_now(services)
