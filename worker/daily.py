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

Phase 2 (digest) is ONE transaction after the last chunk: the loss actions, timeline comments,
warnings and messages, and the day's JobRun marked as planned; then they are sent. The digest is
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
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select, tuple_

from addon import engine, journal, rules
from addon.bitrix import directory
from addon.engine import PortalContext
from addon.models import JobRun, Outbox, StatusHistory, TrackedEntity, naive_utc, utcnow
from addon.options import LOST
from addon.rules.digest import feed_title
from addon.rules.ladder import ENTITY_FIELDS

# Due rows decayed, recorded and committed per chunk; a chunk is 10 batches of writes. 500 keeps the
# worker's memory near the interpreter's own (~100 MB) and a chunk's planning (~0.5 s) well inside
# the 5 s its 10 batches take at the portal's pace, so planning never holds the sending back.
PLAN_CHUNK = 500
log = logging.getLogger(__name__)


@dataclass
class DailySummary:
    portal_id: int
    day: dt.date
    decayed: int = 0
    steps: int = 0
    losses: int = 0
    transfers: int = 0
    warnings: int = 0
    messages: int = 0
    feed_posts: int = 0
    timeline_comments: int = 0
    writes_sent: int = 0
    messages_sent: int = 0
    already_done: bool = False
    transitions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["day"] = self.day.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DailySummary":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["day"] = dt.date.fromisoformat(known["day"])
        return cls(**known)

    def text(self) -> str:
        head = (f"portal {self.portal_id}, day {self.day.isoformat()}: "
                f"{self.decayed} clients decayed ({self.steps} steps), {self.losses} lost, "
                f"{self.transfers} transferred, {self.warnings} warnings, {self.messages} messages, "
                f"{self.writes_sent} writes sent, {self.messages_sent} messages sent")
        if self.already_done:
            head += " (already done for this day)"
        lines = [head] + [f"  {k}: {v}" for k, v in sorted(self.transitions.items())]
        return "\n".join(lines)


class DailySliceOver(Exception):
    """The run stopped after a chunk because its slice of the worker's time is over; run it again."""


def daily_key(portal_id: int, day: dt.date) -> str:
    return f"daily:{portal_id}:{day.isoformat()}"


def previous_run(session, portal_id: int, day: dt.date) -> JobRun | None:
    """The latest planned daily run before `day` (its day, history watermark and pool cursor)."""
    runs = session.scalars(select(JobRun).where(JobRun.portal_id == portal_id, JobRun.kind == "daily")
                           .order_by(JobRun.id.desc()).limit(50)).all()
    best = None
    for run in runs:
        if not (run.params or {}).get("planned"):
            continue
        run_day = dt.date.fromisoformat(run.params["day"])
        if run_day < day and (best is None or run_day > dt.date.fromisoformat(best.params["day"])):
            best = run
    return best


def daily_done(services, portal_id: int, day: dt.date) -> bool:
    with services.sessions() as session:
        job = session.scalar(select(JobRun).where(JobRun.key == daily_key(portal_id, day)))
        return job is not None and job.status == "done"


def run_daily(services, portal_id: int, now: dt.datetime, *, client=None, keep=None, between=None,
              deadline: float | None = None) -> DailySummary:
    """One daily run as of `now` (its day in the portal's time zone). Run it again for the same
    day and it only finishes what is left: a finished day changes and sends nothing. `between()`
    runs after each chunk of the decay (the portal's new events); past `deadline` (time.monotonic)
    the run stops after a chunk with DailySliceOver."""
    from addon.bitrix.client import portal_client

    started = time.monotonic()
    with services.sessions() as session:
        ctx = engine.load_context(session, portal_id)
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
    tally = _Tally()
    try:
        # Whatever an earlier pass planned and did not send goes first (an interrupted batch is
        # confirmed against the portal before anything is sent again).
        tally.writes, tally.messages = engine.flush(services, client, portal_id, feed_title(ctx.opts, day))
        if not planned:
            _redate_if_settings_changed(services, ctx, day)
            org = _decay_in_chunks(services, ctx, job_id, day, client, keep, tally, between, deadline)
            try:
                _plan_digest(services, ctx, job_id, day, org, tally)
            except _NeedOrg:
                # Read the structure outside any write transaction (SQLite has one writer, and a
                # token refresh during the read must be able to commit), then plan again.
                _plan_digest(services, ctx, job_id, day, load_org(client), tally)
        if keep is not None:
            keep()
        tally.writes += engine.send_outbox(services, client, portal_id)
        if keep is not None:
            keep()
        tally.messages += engine.send_notifications(services, client, portal_id, feed_title(ctx.opts, day))
    finally:
        if own:
            client.close()
    with services.sessions() as session:
        job = session.get(JobRun, job_id)
        summary = DailySummary.from_dict(job.summary)
        summary.writes_sent += tally.writes
        summary.messages_sent += tally.messages
        pending = engine_pending(session, portal_id)
        job.summary = {**job.summary, **summary.to_dict()}
        if not pending:
            job.status, job.finished_at = "done", utcnow()
        session.commit()
    seconds = round(time.monotonic() - started, 3)
    log.info("daily run: %s; %s, %.1f s", summary.text().splitlines()[0],
             f"{pending} left to send" if pending else "done", seconds,
             extra={"job": "daily", **summary.to_dict(), "left_to_send": pending, "seconds": seconds})
    return summary


@dataclass
class _Tally:
    """Writes and messages sent by this pass and not yet added to the JobRun's summary."""

    writes: int = 0
    messages: int = 0



def engine_pending(session, portal_id: int) -> int:
    from sqlalchemy import func

    from addon.models import NotificationLog, Outbox

    writes = session.scalar(select(func.count()).select_from(Outbox).where(
        Outbox.portal_id == portal_id, Outbox.status.in_(("pending", "sending")))) or 0
    messages = session.scalar(select(func.count()).select_from(NotificationLog).where(
        NotificationLog.portal_id == portal_id, NotificationLog.status == "pending")) or 0
    return writes + messages



def _redate_if_settings_changed(services, ctx: PortalContext, day: dt.date) -> None:
    """Due and warning dates follow the options: if the table was last dated under other options
    (the settings page re-dates right after saving, and that can fail), re-date before the scan."""
    if ctx.dated_version != ctx.settings_version:
        from worker.reindex import redate

        redate(services, ctx.portal_id)


class _NeedOrg(Exception):
    """Planning found losses or messages that need the company's structure or users' names."""


def _status_key(day: dt.date, row) -> str:
    return f"daily:{day.isoformat()}:{row.entity_type}:{row.entity_id}:{row.status}"


# What a chunk changes on its tracked rows: the rules' fields, the dates, and the status written.
_CHUNK_COLUMNS = (*ENTITY_FIELDS, "due_on", "warn_on", "written_status", "written_at")


def _decay_in_chunks(services, ctx: PortalContext, job_id: int, day: dt.date, client, keep,
                     tally: _Tally, between=None, deadline: float | None = None
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
                writes.append(engine.status_write_values(ctx, row, _status_key(day, row), job_run_id=job_id))
            # The chunk in one statement a table: ORM objects per row cost more CPU than the run's waits.
            engine.write_back(session, TrackedEntity, rows, _CHUNK_COLUMNS)
            engine.insert_rows(session, StatusHistory, history)
            engine.insert_rows(session, Outbox, writes)
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
        tally.writes += engine.send_outbox(services, client, ctx.portal_id)
        if between is not None:
            between()
        if deadline is not None and time.monotonic() > deadline:
            with services.sessions() as session:
                job = session.get(JobRun, job_id)
                job.summary = {**(job.summary or {}),
                               "writes_sent": int((job.summary or {}).get("writes_sent", 0)) + tally.writes}
                session.commit()
            tally.writes = 0
            raise DailySliceOver(f"portal {ctx.portal_id}: the run stops after a chunk, to go on later")


def _plan_digest(services, ctx: PortalContext, job_id: int, day: dt.date,
                 org_and_names: tuple[rules.Org, dict[int, str]] | None, tally: _Tally) -> None:
    """Phase 2, one transaction: loss actions, timeline comments, warnings, the messages."""
    opts = ctx.opts
    transitions: Counter[str] = Counter()
    with services.sessions() as session:
        job = session.get(JobRun, job_id)
        summary = DailySummary.from_dict({**DailySummary(ctx.portal_id, day).to_dict(), **(job.summary or {})})
        summary.writes_sent += tally.writes
        held = {(t, int(i)) for t, i in (job.summary or {}).get("held_losses", [])}
        prev = previous_run(session, ctx.portal_id, day)
        prev_day = dt.date.fromisoformat(prev.params["day"]) if prev is not None else None
        last_line = int((prev.summary or {}).get("last_history_id", 0)) if prev is not None else 0
        pool_cursor = int((prev.summary or {}).get("pool_cursor", 0)) if prev is not None else 0

        # 1. Every change recorded since the previous run: the digest and the loss actions. Plain
        # rows, not ORM objects: a day's lines are as many as its decays.
        lines = session.execute(select(
            StatusHistory.id, StatusHistory.entity_type, StatusHistory.entity_id, StatusHistory.from_status,
            StatusHistory.to_status, StatusHistory.changed_on, StatusHistory.cause, StatusHistory.assigned_by_id)
            .where(StatusHistory.portal_id == ctx.portal_id, StatusHistory.id > last_line)
            .order_by(StatusHistory.id)).all()
        max_line = max([last_line] + [ln.id for ln in lines])
        by_entity: dict[tuple[str, int], list] = defaultdict(list)
        for ln in lines:
            if ln.cause == "decay":
                by_entity[(ln.entity_type, ln.entity_id)].append(ln)
                transitions[f"{ln.from_status}->{ln.to_status}"] += 1
                summary.steps += 1
        losses = {k for k, v in by_entity.items() if v[-1].to_status == LOST}
        org, names = org_and_names if org_and_names is not None else (None, {})
        if losses and org is None and (opts.transfer_mode != "none" or opts.notify_supervisor_on_loss):
            raise _NeedOrg
        rows = _rows_for(session, ctx.portal_id, list(by_entity))
        items: list[rules.DigestItem] = []
        for key, its in by_entity.items():
            row = rows.get(key)
            manager = its[-1].assigned_by_id
            steps = [rules.Step(ln.from_status, ln.to_status, ln.changed_on, ln.cause) for ln in its]
            plan = None
            if key in losses and row is not None and row.status == LOST:
                summary.losses += 1
                plan = rules.loss_plan(opts, manager, org or rules.Org(), pool_cursor)
                pool_cursor = plan.next_pool_cursor
                extra: dict[str, Any] = {}
                if plan.open_to_all:
                    extra["OPENED"] = "Y"
                if plan.new_assignee is not None and plan.new_assignee != row.assigned_by_id:
                    extra["ASSIGNED_BY_ID"] = plan.new_assignee
                    summary.transfers += 1
                if extra or key in held:
                    _plan_loss_write(session, ctx, day, row.id, key in held, extra, its[-1].id, job_id)
                    held.discard(key)
            title = row.title if row is not None else None
            items += rules.items_for_steps(opts, steps, entity_type=key[0], entity_id=key[1], title=title,
                                           manager_id=manager, plan=plan)
        for key in sorted(held):
            # Held back in phase 1 and no longer a fresh loss here (a manager's change since, say):
            # the status it holds now is still owed to the portal if it is LOST.
            row = engine.tracked_row(session, ctx.portal_id, *key)
            if row is not None and row.status == LOST and row.written_status != LOST:
                engine.plan_status_write(session, ctx, row, _status_key(day, row), job_run_id=job_id, check=True)
        if opts.timeline_comments:
            summary.timeline_comments = _plan_timeline(session, ctx, lines, job_id)
        # A day's lines are as many as its decays: let them go before the messages are built (the
        # run's peak memory is here and in sending the messages).
        del lines, by_entity, rows

        # 2. Warnings whose day fell since the previous run (a missed run still warns once).
        low = prev_day if prev_day is not None else day - dt.timedelta(days=1)
        warn_rows = session.execute(select(*_WARN_COLUMNS).where(
            TrackedEntity.portal_id == ctx.portal_id, TrackedEntity.warn_on > low, TrackedEntity.warn_on <= day,
            TrackedEntity.due_on > day, TrackedEntity.entity_type.in_(opts.entity_types))).all()
        for row in warn_rows:
            item = rules.warning_item(opts, engine.entity_of(row), day, entity_type=row.entity_type,
                                      entity_id=row.entity_id, title=row.title, manager_id=row.assigned_by_id,
                                      last_run_on=prev_day)
            if item is not None:
                items.append(item)
                summary.warnings += 1

        # 3. The messages, recorded before anything is sent.
        if org is None and any(i.kind in ("loss_supervisor", "transfer") for i in items):
            raise _NeedOrg
        for message in rules.build_messages(opts, day, items, names):
            if engine.plan_message(session, ctx.portal_id, message.key, message.recipient_id, day, message.kind,
                                   message.text, check=False) is not None:
                summary.messages += 1
        if opts.feed_post:
            summary.feed_posts = _plan_feed(session, ctx, day)

        summary.transitions = dict(transitions)
        job.params = {**(job.params or {}), "planned": True}
        job.summary = {**summary.to_dict(), "last_history_id": max_line, "pool_cursor": pool_cursor,
                       "settings_version": ctx.settings_version}
        job.progress_done = job.progress_total = summary.decayed
        session.commit()
        tally.writes = 0


# What a warning reads of a row: the rules' fields and what the digest line shows.
_WARN_COLUMNS = tuple(TrackedEntity.__table__.c[name] for name in dict.fromkeys(
    (*ENTITY_FIELDS, "entity_type", "entity_id", "title", "assigned_by_id")))


def _rows_for(session, portal_id: int, keys) -> dict[tuple[str, int], Any]:
    """What the digest reads of each changed client (plain rows: id, status, title, assignee)."""
    out: dict[tuple[str, int], Any] = {}
    for kind in ("contact", "company"):
        ids = [i for k, i in keys if k == kind]
        for start in range(0, len(ids), 500):
            for row in session.execute(select(
                    TrackedEntity.id, TrackedEntity.entity_type, TrackedEntity.entity_id, TrackedEntity.status,
                    TrackedEntity.title, TrackedEntity.assigned_by_id).where(
                    TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == kind,
                    TrackedEntity.entity_id.in_(ids[start:start + 500]))):
                out[(kind, row.entity_id)] = row
    return out


def _plan_loss_write(session, ctx: PortalContext, day: dt.date, row_id: int, held: bool, extra: dict,
                     line_id: int, job_id: int) -> None:
    """Open / hand over the lost client. When phase 1 held its status write back, status, OPENED
    and ASSIGNED_BY_ID go in that one update; otherwise (the LOST was written already) a second
    update carries the loss fields alone."""
    row = session.get(TrackedEntity, row_id)
    if "ASSIGNED_BY_ID" in extra:
        before = row.assigned_by_id
        row.assigned_by_id = extra["ASSIGNED_BY_ID"]
        journal.note_transfer(session, job_id, row, before)
    if held:
        engine.plan_status_write(session, ctx, row, _status_key(day, row), extra, job_run_id=job_id, check=True)
        return
    engine.plan_write(session, ctx.portal_id, f"loss:{row.entity_type}:{row.entity_id}:{line_id}",
                      f"crm.{row.entity_type}.update",
                      {"id": row.entity_id, "fields": extra, "params": {"REGISTER_SONET_EVENT": "N"}}, job_id,
                      check=False)



# Each comment names the day of its change: a catch-up after missed runs tells each step on its own
# day, and a comment's text is unique on its entity, which lets an interrupted send be confirmed
# against the portal (engine._confirm_interrupted) instead of posted twice.
TIMELINE_TEXT = {
    "ru": {"decay": "Не забыт, {day}: статус сменился с «{a}» на «{b}».",
           "manager": "Не забыт, {day}: менеджер сменил статус с «{a}» на «{b}».",
           "revert": "Не забыт, {day}: статус возвращён на «{b}».",
           "deal": "Не забыт, {day}: по сделке статус сменился с «{a}» на «{b}».",
           "undo": "Не забыт, {day}: смена статуса отменена, статус снова «{b}».",
           "other": "Не забыт, {day}: статус «{b}»."},
    "en": {"decay": "Nezabyt, {day}: status changed from “{a}” to “{b}”.",
           "manager": "Nezabyt, {day}: the manager changed the status from “{a}” to “{b}”.",
           "revert": "Nezabyt, {day}: status reverted to “{b}”.",
           "deal": "Nezabyt, {day}: a deal changed the status from “{a}” to “{b}”.",
           "undo": "Nezabyt, {day}: the status change was undone, the status is “{b}” again.",
           "other": "Nezabyt, {day}: status “{b}”."},
}


def _plan_timeline(session, ctx: PortalContext, lines, job_id: int) -> int:
    """A timeline comment on the entity for every change since the previous run."""
    texts = TIMELINE_TEXT.get(ctx.opts.language, TIMELINE_TEXT["en"])
    n = 0
    for ln in lines:
        # Indexing only reads what the portal already shows: not a change to comment on.
        if ln.to_status == ln.from_status or ln.cause == "index":
            continue
        text = texts.get(ln.cause, texts["other"]).format(a=ctx.opts.name_of(ln.from_status),
                                                           b=ctx.opts.name_of(ln.to_status),
                                                           day=rules.format_date(ctx.opts, ln.changed_on))
        if engine.plan_write(session, ctx.portal_id, f"timeline:{ln.id}", "crm.timeline.comment.add",
                             {"fields": {"ENTITY_ID": ln.entity_id, "ENTITY_TYPE": ln.entity_type,
                                         "COMMENT": text}}, job_id, check=False) is not None:
            n += 1
    return n


def _plan_feed(session, ctx: PortalContext, day: dt.date) -> int:
    """One live-feed post per manager listing the clients that change status within feed_post_days."""
    opts = ctx.opts
    until = day + dt.timedelta(days=opts.feed_post_days)
    rows = session.scalars(select(TrackedEntity).where(
        TrackedEntity.portal_id == ctx.portal_id, TrackedEntity.due_on > day, TrackedEntity.due_on <= until,
        TrackedEntity.entity_type.in_(opts.entity_types))
        .order_by(TrackedEntity.due_on, TrackedEntity.id)).all()
    by_manager: dict[int, list[TrackedEntity]] = defaultdict(list)
    for row in rows:
        if row.assigned_by_id:
            by_manager[row.assigned_by_id].append(row)
    n = 0
    for manager, its in sorted(by_manager.items()):
        lines = []
        for row in its:
            item = rules.DigestItem("warning", manager, row.entity_type, row.entity_id, row.title, manager,
                                    from_status=row.status, to_status=rules.next_status(opts, row.status),
                                    due_on=row.due_on)
            lines.append("• " + rules.item_text(opts, day, item, {}))
        if engine.plan_message(session, ctx.portal_id, f"feed:{manager}:{day.isoformat()}", manager, day,
                               engine.FEED_KIND, "\n".join(lines), check=False) is not None:
            n += 1
    return n


def load_org(client) -> tuple[rules.Org, dict[int, str]]:
    """The company's structure and the users' names, read once per run."""
    users = directory.employees(client)
    return directory.org(client, users), directory.names(users)
