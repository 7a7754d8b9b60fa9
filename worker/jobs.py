"""The worker's jobs as plain functions over (services, now): each runs the active portals' work
side by side in the worker's bounded pool (worker/pool.py), a portal's work only while holding that
portal's lease, so any number of workers can run them at once (PostgreSQL) and each unit of work is
done by one of them.
"""
from __future__ import annotations

import datetime as dt
import gc
import importlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from addon import engine, leases
from addon.bitrix import pace
from addon.bitrix.client import portal_client
from addon.bitrix.errors import PortalError
from addon.models import PORTAL_ACTIVE, JobRun, Portal, PortalSettings, StoredEvent, utcnow
from addon.options import Options, parse_time_zone
from addon.robots.runner import fire_due_timers, portals_with_robot_work, process_robot_calls
from worker import events, imports
from worker.daily import DailySliceOver, daily_done, run_daily
from worker.daily_summary import daily_key
from worker.pool import AGAIN, Unit, pool_for
from worker.reconcile import reconcile_portal
from worker.reindex import reindex
from worker.undo import run_undo

log = logging.getLogger(__name__)

# How long a daily run holds a slot of the pool before it goes to the back of the queue (it
# resumes after its last chunk). A chunk is about 5 s at a portal's 2 requests/s.
DAILY_SLICE_SECONDS = 15.0
# How often a pass looks for portals whose events came in while it runs.
EVENTS_RESCAN_SECONDS = 1.0


@dataclass
class CycleReport:
    events: int = 0
    daily_runs: int = 0
    jobs: int = 0
    reconciled: int = 0
    robot_calls: int = 0
    timers: int = 0
    skipped_portals: int = 0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:  # the pool's threads report into one report
            setattr(self, name, getattr(self, name) + int(n or 0))

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)


def active_portals(services) -> list[int]:
    with services.sessions() as session:
        return list(session.scalars(select(Portal.id).where(Portal.status == PORTAL_ACTIVE).order_by(Portal.id)))


def daily_is_due(services, portal_id: int, now: dt.datetime) -> bool:
    """The portal's notification time has come today (its time zone) and today's run is not done."""
    return _due_context(services, portal_id, now) is not None


def _due_context(services, portal_id: int, now: dt.datetime) -> engine.PortalContext | None:
    """The portal's context when its daily run is due (daily_is_due), else None."""
    with services.sessions() as session:
        ctx = engine.load_context(session, portal_id)
    local = ctx.local(now)
    if local.time() < ctx.opts.notify_clock() or daily_done(services, portal_id, local.date()):
        return None
    return ctx


def due_portals(services, now: dt.datetime) -> list[int]:
    """The active portals whose notification time has come today and whose run is not done: one
    streamed pass over the portals' settings, then the done runs looked up 500 keys at a time."""
    candidates: dict[str, int] = {}
    with services.sessions() as session:
        rows = session.execute(select(Portal.id, Portal.time_zone, PortalSettings.data)
                               .join(PortalSettings, PortalSettings.portal_id == Portal.id)
                               .where(Portal.status == PORTAL_ACTIVE).order_by(Portal.id)
                               .execution_options(yield_per=500))
        for portal_id, time_zone, data in rows:
            data = dict(data or {})
            if not data.get("time_zone") and time_zone:
                data["time_zone"] = time_zone
            opts = Options.from_dict(data)
            local = now.astimezone(parse_time_zone(opts.time_zone) or dt.timezone.utc)
            if local.time() >= opts.notify_clock():
                candidates[daily_key(portal_id, local.date())] = portal_id
        keys = list(candidates)
        for start in range(0, len(keys), 500):
            for key in session.scalars(select(JobRun.key).where(JobRun.key.in_(keys[start:start + 500]),
                                                                JobRun.status == "done")):
                candidates.pop(key, None)
    return list(candidates.values())


def portals_with_events(services) -> dict[int, int]:
    """{portal: its newest pending event's id} for every active portal with events to apply."""
    with services.sessions() as session:
        return dict(session.execute(
            select(StoredEvent.portal_id, func.max(StoredEvent.id)).join(Portal, Portal.id == StoredEvent.portal_id)
            .where(StoredEvent.processed_at.is_(None), StoredEvent.source != "robot",
                   StoredEvent.attempts < events.MAX_ATTEMPTS, Portal.status == PORTAL_ACTIVE)
            .group_by(StoredEvent.portal_id)).all())


def portal_cycle(services, portal_id: int, now: dt.datetime, *, daily: bool | None = None,
                 owner: str | None = None, report: CycleReport | None = None) -> CycleReport:
    """One portal's turn: its pending events, then (if due, or forced with daily=True) its daily run.
    Events go first so a manager's change made before the run is never overwritten by it; events
    that come in during the run are applied between its chunks. The whole run at once (`nezabyt decay`)."""
    report = report or CycleReport()
    portal_unit(services, portal_id, now, owner, report, daily=daily, sliced=False)
    return report


def portal_unit(services, portal_id: int, now: dt.datetime, owner: str | None, report: CycleReport, *,
                daily: bool | None = None, sliced: bool = True) -> str | None:
    """The pool's unit for one portal: events, then the daily run's next slice. AGAIN when the run
    stopped at the end of its slice (the pool queues the portal again, at the back).

    The lease is claimed first (one statement), and what is due is read under it: a portal another
    worker holds costs one statement, one it has just finished two or three."""
    with leases.holding(services, portal_id, owner) as keep:
        if keep is None:
            report.add("skipped_portals")
            return None
        # Due by the portal's clock (its context goes on to the run), unless the caller says.
        due = _due_context(services, portal_id, now) if daily is None else None
        want_daily = daily if daily is not None else due is not None
        pending = events.has_pending(services, portal_id)
        if not want_daily and not pending:
            return None
        budget = pace.budget_state(services, portal_id)
        with portal_client(services, portal_id) as client:
            if budget.plan_stale:
                try:
                    pace.read_plan(services, portal_id, client)
                except PortalError as exc:  # the standard plan's limits hold until it answers
                    log.warning("portal %s: could not read its plan: %s", portal_id, exc)
            if pending:
                report.add("events", events.process_events(services, portal_id, now, client=client,
                                                           keep=keep).processed)
            if want_daily:
                def between() -> None:  # the portal's own new events, between chunks of its run
                    if events.has_pending(services, portal_id):
                        report.add("events", events.process_events(services, portal_id, now, client=client,
                                                                   keep=keep).processed)

                deadline = time.monotonic() + DAILY_SLICE_SECONDS if sliced else None
                try:
                    run_daily(services, portal_id, now, client=client, keep=keep, between=between, deadline=deadline,
                              ctx=due)
                except DailySliceOver:
                    return AGAIN
                report.add("daily_runs")
    if budget.has_error:  # its work went through: the error noted before is over
        pace.note_error(services, portal_id, None)
    return None


def _noting(services, report: CycleReport, what: str):
    """The pool's on_error: the failure goes to the report and to the portal's budget row (status)."""
    def on_error(unit: Unit, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        report.error(f"{what} portal {unit.portal_id}: {text}")
        try:
            pace.note_error(services, unit.portal_id, f"{what}: {text}")
        except Exception:  # noqa: BLE001 — the report has it; the status line is best effort
            log.exception("could not note the error of portal %s", unit.portal_id)
    return on_error


def _each_portal(services, fn, report: CycleReport, what: str, portal_ids: list[int] | None = None) -> None:
    """fn(portal_id) for every active portal, side by side in the pool; one's failure is its own."""
    ids = active_portals(services) if portal_ids is None else portal_ids
    pool_for(services).run([Unit(pid, (lambda pid=pid: fn(pid)), what) for pid in ids],
                           on_error=_noting(services, report, what))


# What a portal's unit imports on first use, below the modules imported here: the batch client's
# HTTP stack, which addon.bitrix.batch imports lazily. Imported
# once before the pool starts: otherwise the pool's threads all reach the same first import at once
# and queue on its import lock (measured: ~0.3 s of wall per portal at K=20, fast-bitrix24 and its
# dependencies being the heaviest).
UNIT_MODULES = ("aiohttp", "fast_bitrix24", "fast_bitrix24.utils")


def warm_imports() -> None:
    """Import every module a portal's unit needs, in the calling thread (before the pool runs)."""
    for name in UNIT_MODULES:
        importlib.import_module(name)


# The collector's thresholds for a worker process: a chunk of a daily run allocates tens of thousands
# of short-lived objects (rows, dicts, tuples), and at CPython's default (a young collection every
# 700 allocations, each older one every 10 of those) the pass spent 5-9% of its CPU scanning them.
# Young collections every 50,000 allocations still reclaim every cycle; the memory they may hold
# back is a few megabytes (bench/RESULTS.md, "Fourth round").
GC_THRESHOLDS = (50_000, 20, 50)


def settle_gc() -> None:
    """Once a worker process has imported what it runs: move the modules' objects out of the
    collector's sight (gc.freeze: they live as long as the process) and space its collections out
    (GC_THRESHOLDS). Called once per process; freezing again later would pin a pass's cyclic garbage."""
    warm_imports()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def drain_and_run(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    """Every portal: pending events, and the daily run where its notification time has come — side
    by side in the pool. Portals with only events go first; a long daily run takes its turn in
    slices; portals whose events come in while the pass runs join it within a second."""
    warm_imports()
    report = CycleReport()
    due = due_portals(services, now)
    random.shuffle(due)  # several workers start the day on different portals
    waiting = portals_with_events(services)
    seen: dict[int, int] = dict(waiting)  # the newest event id each portal was queued for

    def unit(pid: int, urgent: bool) -> Unit:
        return Unit(pid, lambda: portal_unit(services, pid, now, owner, report), "cycle", urgent=urgent)

    due_set = set(due)
    units = [unit(pid, True) for pid in waiting if pid not in due_set] + [unit(pid, False) for pid in due]

    def refill() -> list[Unit]:
        more = []
        for pid, newest in portals_with_events(services).items():
            if newest > seen.get(pid, 0):
                seen[pid] = newest
                more.append(unit(pid, True))
        return more

    pool_for(services).run(units, refill=refill, refill_every=EVENTS_RESCAN_SECONDS,
                           on_error=_noting(services, report, "cycle"))
    return report


def reconcile_all(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    report = CycleReport()

    def one(pid: int) -> None:
        with leases.holding(services, pid, owner, kind="reconcile") as keep:
            if keep is None:
                report.add("skipped_portals")
                return
            reconcile_portal(services, pid, now)
            report.add("reconciled")

    _each_portal(services, one, report, "reconcile")
    return report


def robots_all(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    """Stored robot calls per portal, then due robot timers (the robots engineer's functions)."""
    report = CycleReport()

    def one(pid: int) -> None:
        with leases.holding(services, pid, owner, kind="robots") as keep:
            if keep is None:
                report.add("skipped_portals")
                return
            report.add("robot_calls", process_robot_calls(services, pid, now))

    _each_portal(services, one, report, "robots", portals_with_robot_work(services))
    try:
        report.add("timers", fire_due_timers(services, now))
    except Exception as exc:  # noqa: BLE001
        log.exception("robot timers failed")
        report.error(f"timers: {type(exc).__name__}: {exc}")
    return report


def run_queued_jobs(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    """Re-index, bulk-load and undo jobs the settings UI queued as JobRun rows (status "queued"), and
    jobs left "running" by a worker that died: whoever holds the portal's lease now resumes them
    (both jobs are resumable: a re-index reads again, an import skips rows already applied)."""
    report = CycleReport()
    owner = owner or services.settings.worker_id
    with services.sessions() as session:
        queued = session.execute(select(JobRun.id, JobRun.portal_id).where(
            JobRun.kind.in_(("reindex", "import", "import_match", "undo")),
            (JobRun.status == "queued") | ((JobRun.status == "running") & (JobRun.owner != owner)),
        ).order_by(JobRun.id)).all()
    by_portal: dict[int, list[int]] = {}
    for job_id, portal_id in queued:
        if portal_id is not None:
            by_portal.setdefault(portal_id, []).append(job_id)

    def one(portal_id: int) -> None:
        # A portal's jobs one after another (one unit per portal); portals side by side.
        for job_id in by_portal[portal_id]:
            try:
                with leases.holding(services, portal_id, owner) as keep:
                    if keep is None:
                        report.add("skipped_portals")
                        continue
                    job = _take_job(services, job_id, owner)
                    if job is None:
                        continue
                    _run_job(services, job, now, keep)
                    report.add("jobs")
            except Exception as exc:  # noqa: BLE001
                log.exception("job %s failed", job_id)
                report.error(f"job {job_id}: {type(exc).__name__}: {exc}")
                _fail_job(services, job_id, exc)

    if by_portal:
        _each_portal(services, one, report, "jobs", list(by_portal))
    return report


def _take_job(services, job_id: int, owner: str) -> dict[str, Any] | None:
    with services.sessions() as session:
        # Called while holding the portal's lease: a "running" job of another owner is orphaned.
        job = session.scalar(select(JobRun).where(
            JobRun.id == job_id,
            (JobRun.status == "queued") | ((JobRun.status == "running") & (JobRun.owner != owner)))
            .with_for_update(skip_locked=True))
        if job is None:
            return None
        job.status, job.owner, job.started_at = "running", owner, utcnow()
        session.commit()
        return {"id": job.id, "kind": job.kind, "portal_id": job.portal_id, "params": dict(job.params or {})}


def _run_job(services, job: dict[str, Any], now: dt.datetime, keep) -> None:
    if job["kind"] == "reindex":
        reindex(services, job["portal_id"], now, job_run_id=job["id"], keep=keep)
        return
    if job["kind"] == "undo":
        run_undo(services, job["id"], now, keep=keep)
        return
    import_job_id = job["params"].get("import_job_id") or job["params"].get("job_id")
    if job["kind"] == "import_match":
        imports.match_import(services, int(import_job_id), job["id"], keep=keep)
        return
    imports.apply_import(services, int(import_job_id), now)
    with services.sessions() as session:
        row = session.get(JobRun, job["id"])
        if row.status == "running":
            row.status, row.finished_at = "done", utcnow()
        session.commit()


def _fail_job(services, job_id: int, exc: Exception) -> None:
    with services.sessions() as session:
        row = session.get(JobRun, job_id)
        if row is not None and row.status in ("running", "queued"):
            row.status, row.error, row.finished_at = "failed", f"{type(exc).__name__}: {exc}"[:2000], utcnow()
            session.commit()


def run_once(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    """`nezabyt worker --once`: everything stored and due, once, then return."""
    total = CycleReport()
    for part in (run_queued_jobs(services, now, owner), drain_and_run(services, now, owner),
                 robots_all(services, now, owner)):
        for name in ("events", "daily_runs", "jobs", "reconciled", "robot_calls", "timers", "skipped_portals"):
            total.add(name, getattr(part, name))
        total.errors += part.errors
    return total
