"""The worker's jobs as plain functions over (services, now): each walks the active portals and
does a portal's work only while holding that portal's lease, so any number of workers can run
them at once (PostgreSQL) and each unit of work is done by one of them.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from addon import engine
from addon.models import PORTAL_ACTIVE, JobRun, Portal, utcnow
from worker import leases

log = logging.getLogger(__name__)


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


def active_portals(services) -> list[int]:
    with services.sessions() as session:
        return list(session.scalars(select(Portal.id).where(Portal.status == PORTAL_ACTIVE).order_by(Portal.id)))


def daily_is_due(services, portal_id: int, now: dt.datetime) -> bool:
    """The portal's notification time has come today (its time zone) and today's run is not done."""
    from worker.daily import daily_done

    with services.sessions() as session:
        ctx = engine.load_context(session, portal_id)
    local = ctx.local(now)
    if local.time() < ctx.opts.notify_clock():
        return False
    return not daily_done(services, portal_id, local.date())


def portal_cycle(services, portal_id: int, now: dt.datetime, *, daily: bool | None = None,
                 owner: str | None = None, report: CycleReport | None = None) -> CycleReport:
    """One portal's turn: its pending events, then (if due, or forced with daily=True) its daily run.
    Events go first so a manager's change made before the run is never overwritten by it."""
    from worker.daily import run_daily
    from worker.events import has_pending, process_events

    report = report or CycleReport()
    want_daily = daily_is_due(services, portal_id, now) if daily is None else daily
    if not want_daily and not has_pending(services, portal_id):
        return report
    with leases.holding(services, portal_id, owner) as keep:
        if keep is None:
            report.skipped_portals += 1
            return report
        from addon.bitrix.client import portal_client

        with portal_client(services, portal_id) as client:
            ev = process_events(services, portal_id, now, client=client, keep=keep)
            report.events += ev.processed
            # Checked again under the lease: another worker may have finished it meanwhile.
            if want_daily and (daily or daily_is_due(services, portal_id, now)):
                run_daily(services, portal_id, now, client=client, keep=keep)
                report.daily_runs += 1
    return report


def _each_portal(services, now, fn, report: CycleReport, what: str) -> None:
    for portal_id in active_portals(services):
        try:
            fn(portal_id)
        except Exception as exc:  # noqa: BLE001 — one portal's trouble must not stop the others
            log.exception("%s failed for portal %s", what, portal_id)
            report.errors.append(f"{what} portal {portal_id}: {type(exc).__name__}: {exc}")


def drain_and_run(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    """Every portal: pending events, and the daily run where its notification time has come."""
    report = CycleReport()
    _each_portal(services, now, lambda pid: portal_cycle(services, pid, now, owner=owner, report=report),
                 report, "cycle")
    return report


def reconcile_all(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    report = CycleReport()
    try:
        from worker.reconcile import reconcile_portal
    except ImportError:
        return report

    def one(pid: int) -> None:
        with leases.holding(services, pid, owner, kind="reconcile") as keep:
            if keep is None:
                report.skipped_portals += 1
                return
            reconcile_portal(services, pid, now)
            report.reconciled += 1

    _each_portal(services, now, one, report, "reconcile")
    return report


def robots_all(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    """Stored robot calls per portal, then due robot timers (the robots engineer's functions)."""
    report = CycleReport()
    try:
        from worker.robots import fire_due_timers, process_robot_calls
    except ImportError:
        return report

    def one(pid: int) -> None:
        with leases.holding(services, pid, owner, kind="robots") as keep:
            if keep is None:
                report.skipped_portals += 1
                return
            report.robot_calls += int(process_robot_calls(services, pid, now) or 0)

    _each_portal(services, now, one, report, "robots")
    try:
        report.timers += int(fire_due_timers(services, now) or 0)
    except Exception as exc:  # noqa: BLE001
        log.exception("robot timers failed")
        report.errors.append(f"timers: {type(exc).__name__}: {exc}")
    return report


def run_queued_jobs(services, now: dt.datetime, owner: str | None = None) -> CycleReport:
    """Re-index and bulk-load jobs the settings UI queued as JobRun rows (status "queued"), and
    jobs left "running" by a worker that died: whoever holds the portal's lease now resumes them
    (both jobs are resumable: a re-index reads again, an import skips rows already applied)."""
    report = CycleReport()
    owner = owner or services.settings.worker_id
    with services.sessions() as session:
        queued = session.execute(select(JobRun.id, JobRun.portal_id).where(
            JobRun.kind.in_(("reindex", "import", "import_match")),
            (JobRun.status == "queued") | ((JobRun.status == "running") & (JobRun.owner != owner)),
        ).order_by(JobRun.id)).all()
    for job_id, portal_id in queued:
        if portal_id is None:
            continue
        try:
            with leases.holding(services, portal_id, owner) as keep:
                if keep is None:
                    report.skipped_portals += 1
                    continue
                job = _take_job(services, job_id, owner)
                if job is None:
                    continue
                _run_job(services, job, now, keep)
                report.jobs += 1
        except Exception as exc:  # noqa: BLE001
            log.exception("job %s failed", job_id)
            report.errors.append(f"job {job_id}: {type(exc).__name__}: {exc}")
            _fail_job(services, job_id, exc)
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
        from worker.reindex import reindex

        reindex(services, job["portal_id"], now, job_run_id=job["id"], keep=keep)
        return
    from worker import imports  # the settings-UI engineer's bulk load

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
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.errors += part.errors
    return total
