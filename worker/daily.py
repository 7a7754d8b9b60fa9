"""The daily run of one portal: decay with exact catch-up, the actions on loss, timeline comments,
then the digest and the live-feed post — each planned before it is sent, so a run killed at any
point and run again completes the rest and repeats nothing.

Phase 1 (decay) walks the entities due by the day in chunks of PLAN_CHUNK, streamed by keyset on
(due_on, id): each chunk is ONE transaction (rows decayed, their history lines and their Outbox
writes), then that chunk's writes are sent, 50 a batch, before the next chunk is read. Memory is
bounded by a chunk, not by the day, and the first write leaves within a second of the start.
A crash inside a chunk leaves nothing of it; a decayed row no longer falls in the due range, so a
rerun first sends what is pending (the interrupted batch confirmed against the portal) and then
carries on with the rows still due.

Phase 2 (digest, worker.daily_digest) is ONE transaction after the last chunk: the loss actions,
timeline comments, warnings and messages, and the day's JobRun marked as planned; then they are sent. The digest is
built from the history lines recorded since the previous run (decays found by event processing
included), so it tells every change once whichever job made it.

Between chunks the worker may apply the portal's events that came in during the run (`between`),
so a manager's change waits no longer than one chunk: the events stored before the run were applied
before it started, and an event applied between chunks brings its client up to date through its day
first (decay_through) exactly as the run would, so the result is the same either way (DESIGN §1).
A run may also stop after a chunk when its slice of the worker's time is over (`deadline`,
DailySliceOver): the next pass resumes it where it stopped, so one big portal never holds a slot of
the worker's pool while small ones wait.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy import func, select, tuple_

from addon import bulkwrite, engine, journal, notifications, outbox, rules
from addon.dating import redate
from addon.bitrix.client import portal_client
from addon.engine import PortalContext
from addon.models import JobRun, NotificationLog, Outbox, StatusHistory, TrackedEntity, naive_utc, utcnow
from addon.options import LOST
from addon.rules.digest import feed_title
from addon.rules.ladder import ENTITY_FIELDS
from worker.daily_digest import NeedOrg, load_org, plan_digest, status_key
from worker.daily_summary import DailySummary, Tally, daily_key

# Due rows decayed, recorded and committed per chunk; a chunk is 10 batches of writes. 500 keeps the
# worker's memory near the interpreter's own (~100 MB) and a chunk's planning (~0.5 s) well inside
# the 5 s its 10 batches take at the portal's pace, so planning never holds the sending back.
PLAN_CHUNK = 500
log = logging.getLogger(__name__)


class DailySliceOver(Exception):
    """The run stopped after a chunk because its slice of the worker's time is over; run it again."""


def daily_done(services, portal_id: int, day: dt.date) -> bool:
    with services.sessions() as session:
        job = session.scalar(select(JobRun).where(JobRun.key == daily_key(portal_id, day)))
        return job is not None and job.status == "done"


def run_daily(services, portal_id: int, now: dt.datetime, *, client=None, keep=None, between=None,
              deadline: float | None = None, ctx: PortalContext | None = None) -> DailySummary:
    """One daily run as of `now` (its day in the portal's time zone). Run it again for the same
    day and it only finishes what is left: a finished day changes and sends nothing. `between()`
    runs after each chunk of the decay (the portal's new events); past `deadline` (time.monotonic)
    the run stops after a chunk with DailySliceOver. `ctx`: the portal's context if the caller
    has just read it."""
    started, cpu_started = time.monotonic(), time.thread_time()
    with services.sessions() as session:
        ctx = ctx or engine.load_context(session, portal_id)
        day = ctx.today(now)
        key = daily_key(portal_id, day)
        job = session.scalar(select(JobRun).where(JobRun.key == key))
        if job is not None and job.status == "done":
            summary = DailySummary.from_dict(job.summary)
            summary.already_done = True
            return summary
        if job is None:
            job = JobRun(portal_id=portal_id, kind="daily", key=key, status="running", params={"day": day.isoformat()},
                         as_of=naive_utc(now), owner=services.settings.worker_id, started_at=utcnow(),
                         summary=DailySummary(portal_id, day).to_dict())
            session.add(job)
            session.commit()
        job_id = job.id
        planned = bool((job.params or {}).get("planned"))

    own = client is None
    client = client or portal_client(services, portal_id)
    tally = Tally()
    try:
        # Whatever an earlier pass planned and did not send goes first (an interrupted batch is
        # confirmed against the portal before anything is sent again).
        tally.writes, tally.messages = notifications.flush(services, client, portal_id, feed_title(ctx.opts, day))
        if not planned:
            _redate_if_settings_changed(services, ctx, day)
            org = _decay_in_chunks(services, ctx, job_id, day, client, keep, tally, between, deadline)
            try:
                plan_digest(services, ctx, job_id, day, org, tally)
            except NeedOrg:
                # Read the structure outside any write transaction (SQLite has one writer, and a
                # token refresh during the read must be able to commit), then plan again.
                plan_digest(services, ctx, job_id, day, load_org(client), tally)
        if keep is not None:
            keep()
        tally.writes += outbox.send_outbox(services, client, portal_id)
        if keep is not None:
            keep()
        tally.messages += notifications.send_notifications(services, client, portal_id, feed_title(ctx.opts, day))
    finally:
        if own:
            client.close()
    with services.sessions() as session:
        job = session.get(JobRun, job_id)
        summary = DailySummary.from_dict(job.summary)
        summary.writes_sent += tally.writes
        summary.messages_sent += tally.messages
        pending = left_to_send(session, portal_id)
        job.summary = {**job.summary, **summary.to_dict()}
        if not pending:
            job.status, job.finished_at = "done", utcnow()
        session.commit()
    seconds = round(time.monotonic() - started, 3)
    cpu = round(time.thread_time() - cpu_started, 3)  # this thread's CPU: what the run costs the worker
    log.info("daily run: %s; %s, %.1f s (CPU %.2f s)", summary.text().splitlines()[0],
             f"{pending} left to send" if pending else "done", seconds, cpu,
             extra={"job": "daily", **summary.to_dict(), "left_to_send": pending, "seconds": seconds,
                    "cpu_seconds": cpu})
    return summary


def left_to_send(session, portal_id: int) -> int:
    writes = session.scalar(select(func.count()).select_from(Outbox).where(
        Outbox.portal_id == portal_id, Outbox.status.in_(outbox.WAITING))) or 0
    messages = session.scalar(select(func.count()).select_from(NotificationLog).where(
        NotificationLog.portal_id == portal_id, NotificationLog.status == "pending")) or 0
    return writes + messages


def _redate_if_settings_changed(services, ctx: PortalContext, day: dt.date) -> None:
    """Due and warning dates follow the options: if the table was last dated under other options
    (the settings page re-dates right after saving, and that can fail), re-date before the scan."""
    if ctx.dated_version != ctx.settings_version:
        redate(services, ctx.portal_id)


# What a chunk changes on its tracked rows: the rules' fields, the dates, and the status written.
_CHUNK_COLUMNS = (*ENTITY_FIELDS, "due_on", "warn_on", "written_status", "written_at")


def _decay_in_chunks(services, ctx: PortalContext, job_id: int, day: dt.date, client, keep,
                     tally: Tally, between=None, deadline: float | None = None
                     ) -> tuple[rules.Org, dict[int, str]] | None:
    """Phase 1: decay the rows due by the day, PLAN_CHUNK at a time, each chunk committed and then
    its writes sent before the next chunk is read. Returns the company's structure and the users'
    names when a loss made phase 2 need them (read once, between chunks, outside a transaction)."""
    opts = ctx.opts
    needs_org = opts.transfer_mode != "none" or opts.notify_supervisor_on_loss
    org = None
    # A client that becomes LOST may also be opened to all or handed over (phase 2 decides, with
    # the company's structure). Its status write is held back to phase 2 so that status, OPENED
    # and ASSIGNED_BY_ID still travel in one update; the held keys are kept in the JobRun.
    hold_losses = opts.open_to_all_on_loss or opts.transfer_mode != "none"
    after: tuple[dt.date, int] | None = None
    while True:
        with services.sessions() as session:
            query = select(TrackedEntity).where(
                TrackedEntity.portal_id == ctx.portal_id, TrackedEntity.due_on <= day,
                TrackedEntity.entity_type.in_(opts.entity_types))  # the admin may have dropped a type
            if after is not None:
                # Keyset: the plain due_on bound lets the (portal_id, due_on) index start at the
                # cursor; the row comparison breaks ties on id.
                query = query.where(TrackedEntity.due_on >= after[0],
                                    tuple_(TrackedEntity.due_on, TrackedEntity.id) > after)
            rows = session.scalars(query.order_by(TrackedEntity.due_on, TrackedEntity.id).limit(PLAN_CHUNK)).all()
            if not rows:
                return org
            last = len(rows) < PLAN_CHUNK  # a short chunk is the day's last: no query to find none left
            decayed, lost = 0, False
            held: list[list] = []
            changes: list[dict[str, Any]] = []
            history: list[dict[str, Any]] = []
            writes: list[dict[str, Any]] = []
            for row in rows:
                after = (row.due_on, row.id)  # before store() re-dates it
                before = (row.status, row.status_set_on, row.previous_status)
                e, steps = rules.decay_through(opts, engine.entity_of(row), day)
                engine.store(row, e, opts)  # no steps: stale dates from a settings change, just re-dated
                if not steps:
                    continue
                history += engine.history_values(row, steps)
                # The journal keeps what the row was, so an undo can put it back (addon.journal).
                changes.append(journal.row_change(ctx.portal_id, job_id, row, old_status=before[0],
                                                  old_status_set_on=before[1], old_previous_status=before[2],
                                                  old_assigned_by_id=row.assigned_by_id))
                decayed += 1
                lost = lost or row.status == LOST
                if hold_losses and row.status == LOST:
                    held.append([row.entity_type, row.entity_id])
                    continue
                writes.append(outbox.status_write_values(ctx, row, status_key(day, row), job_run_id=job_id))
            # The chunk in one statement a table: ORM objects per row cost more CPU than the run's waits.
            bulkwrite.write_back(session, TrackedEntity, rows, _CHUNK_COLUMNS)
            bulkwrite.insert_rows(session, StatusHistory, history)
            # With nothing older waiting, the chunk's writes are the next to go: stored as being sent
            # and sent from here, not read back. Otherwise they queue behind the older ones, in order.
            planned = outbox.insert_sending(session, writes) if writes and outbox.nothing_waiting(
                session, ctx.portal_id) else None
            if planned is None:
                bulkwrite.insert_rows(session, Outbox, writes)
            journal.record_changes(session, changes)
            job = session.get(JobRun, job_id)
            done = dict(job.summary or {})
            done["decayed"] = int(done.get("decayed", 0)) + decayed
            done["writes_sent"] = int(done.get("writes_sent", 0)) + tally.writes
            if held:
                done["held_losses"] = list(done.get("held_losses", [])) + held
            job.summary = done
            job.progress_done = job.progress_total = done["decayed"]
            session.commit()
            tally.writes = 0
        # The session is closed: the chunk's objects are gone before its writes are sent.
        if keep is not None:
            keep()
        if lost and needs_org and org is None:
            org = load_org(client)
        if planned is not None:
            tally.writes += outbox.send_planned(services, client, planned)[0]
        elif writes:
            tally.writes += outbox.send_outbox(services, client, ctx.portal_id)
        if between is not None:
            between()
        if last:
            return org
        if deadline is not None and time.monotonic() > deadline:
            with services.sessions() as session:
                job = session.get(JobRun, job_id)
                job.summary = {**(job.summary or {}),
                               "writes_sent": int((job.summary or {}).get("writes_sent", 0)) + tally.writes}
                session.commit()
            tally.writes = 0
            raise DailySliceOver(f"portal {ctx.portal_id}: the run stops after a chunk, to go on later")
