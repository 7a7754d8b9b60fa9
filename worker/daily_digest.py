"""Phase 2 of the daily run (worker.daily), ONE transaction: the loss actions, timeline comments,
warnings and messages planned from the history lines recorded since the previous run."""
from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select

from addon import engine, journal, notifications, outbox, rules
from addon.bulkwrite import among
from addon.bitrix import directory
from addon.engine import PortalContext
from addon.models import JobRun, StatusHistory, TrackedEntity
from addon.options import LOST
from addon.rules.ladder import ENTITY_FIELDS
from worker.daily_summary import DailySummary, Tally


class NeedOrg(Exception):
    """Planning found losses or messages that need the company's structure or users' names."""


def status_key(day: dt.date, row) -> str:
    return f"daily:{day.isoformat()}:{row.entity_type}:{row.entity_id}:{row.status}"


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


def plan_digest(services, ctx: PortalContext, job_id: int, day: dt.date,
                org_and_names: tuple[rules.Org, dict[int, str]] | None, tally: Tally) -> None:
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
            raise NeedOrg
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
                outbox.plan_status_write(session, ctx, row, status_key(day, row), job_run_id=job_id, check=True)
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
            raise NeedOrg
        for message in rules.build_messages(opts, day, items, names):
            if notifications.plan_message(session, ctx.portal_id, message.key, message.recipient_id, day,
                                          message.kind, message.text, check=False) is not None:
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
                    among(session, TrackedEntity.entity_id, ids[start:start + 500]))):
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
        outbox.plan_status_write(session, ctx, row, status_key(day, row), extra, job_run_id=job_id, check=True)
        return
    outbox.plan_write(session, ctx.portal_id, f"loss:{row.entity_type}:{row.entity_id}:{line_id}",
                      f"crm.{row.entity_type}.update",
                      {"id": row.entity_id, "fields": extra, "params": {"REGISTER_SONET_EVENT": "N"}}, job_id,
                      check=False)


def _plan_timeline(session, ctx: PortalContext, lines, job_id: int) -> int:
    """A timeline comment on the entity for every change since the previous run."""
    n = 0
    for ln in lines:
        text = rules.timeline_text(ctx.opts, rules.Step(ln.from_status, ln.to_status, ln.changed_on, ln.cause))
        if text is None:
            continue
        if outbox.plan_write(session, ctx.portal_id, f"timeline:{ln.id}", "crm.timeline.comment.add",
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
        items = [rules.feed_item(opts, entity_type=row.entity_type, entity_id=row.entity_id, title=row.title,
                                 manager_id=manager, status=row.status, due_on=row.due_on) for row in its]
        if notifications.plan_message(session, ctx.portal_id, f"feed:{manager}:{day.isoformat()}", manager, day,
                                      notifications.FEED_KIND, rules.feed_text(opts, day, items),
                                      check=False) is not None:
            n += 1
    return n


def load_org(client) -> tuple[rules.Org, dict[int, str]]:
    """The company's structure and the users' names, read once per run."""
    users = directory.employees(client)
    return directory.org(client, users), directory.names(users)
