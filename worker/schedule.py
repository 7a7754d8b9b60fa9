"""The worker's schedule, declared in one list, and the APScheduler that runs it (only in the
worker process, never inside gunicorn). Every job is a plain function of (services, now)."""
from __future__ import annotations

import datetime as dt
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    target: str  # "module:function" taking (services, now)
    every: dt.timedelta
    what: str


# The one place the schedule is declared. Each portal's daily run happens at its own notification
# time in its own time zone: `drain_and_run` checks every few seconds which portals have reached
# theirs (and have not run today), so a worker started late still runs the day's run once.
SCHEDULE: tuple[ScheduledJob, ...] = (
    ScheduledJob("events-and-daily-runs", "worker.jobs:drain_and_run", dt.timedelta(seconds=5),
                 "drain stored events; each portal's daily run at its notification time"),
    ScheduledJob("reconcile", "worker.jobs:reconcile_all", dt.timedelta(minutes=15),
                 "store the changes whose events were lost"),
    ScheduledJob("robots", "worker.jobs:robots_all", dt.timedelta(minutes=1),
                 "stored robot calls and due robot timers"),
    ScheduledJob("queued-jobs", "worker.jobs:run_queued_jobs", dt.timedelta(seconds=10),
                 "re-index and bulk loads queued from the settings UI"),
)


def resolve(target: str) -> Callable[..., Any]:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def run_job(services, job: ScheduledJob, clock: Callable[[], dt.datetime] | None = None) -> Any:
    now = clock() if clock else dt.datetime.now(dt.timezone.utc)
    try:
        return resolve(job.target)(services, now)
    except Exception:  # noqa: BLE001 — the scheduler must keep running
        log.exception("scheduled job %s failed", job.name)
        return None


def build_scheduler(services, *, blocking: bool = True, schedule: tuple[ScheduledJob, ...] = SCHEDULE):
    """An APScheduler 3 scheduler with every job of SCHEDULE: one instance of each at a time
    (max_instances=1) and missed runs folded into one (coalesce=True)."""
    scheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=dt.timezone.utc)
    for job in schedule:
        scheduler.add_job(run_job, "interval", args=(services, job), id=job.name, name=job.what,
                          seconds=job.every.total_seconds(), max_instances=1, coalesce=True,
                          next_run_time=dt.datetime.now(dt.timezone.utc))
    return scheduler
