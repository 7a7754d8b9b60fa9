"""The daily run of one portal: decay with exact catch-up, the actions on loss, timeline comments,
then the digest and the live-feed post — each planned before it is sent, so a run killed at any
point and run again completes the rest and repeats nothing.

Phase 1 (plan) is ONE transaction: decay every entity due by the day (a range scan on due_on),
plan every portal write in Outbox and every message in NotificationLog, and mark the day's JobRun
as planned. A crash before its commit leaves nothing; after it, phase 2 only sends what is still
pending (Outbox and NotificationLog rows are marked per batch of 50). The digest is built from
the history lines recorded since the previous run (decays found by event processing included),
so it tells every change once whichever job made it.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from addon import engine, rules
from addon.engine import PortalContext
from addon.models import JobRun, StatusHistory, TrackedEntity, utcnow
from addon.options import LOST

SCAN_CHUNK = 1000


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


def run_daily(services, portal_id: int, now: dt.datetime, *, client=None, keep=None) -> DailySummary:
    """One daily run as of `now` (its day in the portal's time zone). Run it again for the same
    day and it only finishes what is left: a finished day changes and sends nothing."""
    from addon.portal_client import PortalClient

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
                         as_of=_naive_utc(now), owner=services.settings.worker_id, started_at=utcnow())
            session.add(job)
            session.commit()
        job_id = job.id
        planned = bool((job.params or {}).get("planned"))

    own = client is None
    client = client or PortalClient(services, portal_id)
    try:
        # Whatever an earlier pass planned and did not send goes first.
        engine.flush(services, client, portal_id, ctx.opts.template("feed_title"))
        if not planned:
            _redate_if_settings_changed(services, ctx, day)
            try:
                _plan(services, ctx, job_id, day, None)
            except _NeedOrg:
                # Read the structure outside any write transaction (SQLite has one writer, and a
                # token refresh during the read must be able to commit), then plan again.
                _plan(services, ctx, job_id, day, load_org(client))
        if keep is not None:
            keep()
        writes = engine.send_outbox(services, client, portal_id)
        if keep is not None:
            keep()
        messages = engine.send_notifications(services, client, portal_id, ctx.opts.template("feed_title"))
    finally:
        if own:
            client.close()
    with services.sessions() as session:
        job = session.get(JobRun, job_id)
        summary = DailySummary.from_dict(job.summary)
        summary.writes_sent += writes
        summary.messages_sent += messages
        pending = engine_pending(session, portal_id)
        job.summary = {**job.summary, **summary.to_dict()}
        if not pending:
            job.status, job.finished_at = "done", utcnow()
        session.commit()
    return summary


def engine_pending(session, portal_id: int) -> int:
    from sqlalchemy import func

    from addon.models import NotificationLog, Outbox

    writes = session.scalar(select(func.count()).select_from(Outbox).where(
        Outbox.portal_id == portal_id, Outbox.status.in_(("pending", "sending")))) or 0
    messages = session.scalar(select(func.count()).select_from(NotificationLog).where(
        NotificationLog.portal_id == portal_id, NotificationLog.status == "pending")) or 0
    return writes + messages


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _redate_if_settings_changed(services, ctx: PortalContext, day: dt.date) -> None:
    """Due and warning dates follow the options: if they changed since the previous run and the
    settings page could not re-date (it tries right after saving), re-date before the scan."""
    with services.sessions() as session:
        prev = previous_run(session, ctx.portal_id, day)
        version = (prev.summary or {}).get("settings_version") if prev is not None else None
    if version != ctx.settings_version:
        from worker.reindex import redate

        redate(services, ctx.portal_id, ctx.opts)


class _NeedOrg(Exception):
    """Planning found losses or messages that need the company's structure or users' names."""


def _plan(services, ctx: PortalContext, job_id: int, day: dt.date,
          org_and_names: tuple[rules.Org, dict[int, str]] | None) -> None:
    opts = ctx.opts
    summary = DailySummary(ctx.portal_id, day)
    transitions: Counter[str] = Counter()
    with services.sessions() as session:
        job = session.get(JobRun, job_id)
        prev = previous_run(session, ctx.portal_id, day)
        prev_day = dt.date.fromisoformat(prev.params["day"]) if prev is not None else None
        last_line = int((prev.summary or {}).get("last_history_id", 0)) if prev is not None else 0
        pool_cursor = int((prev.summary or {}).get("pool_cursor", 0)) if prev is not None else 0

        # 1. Decay everything due by the day (index range scan on due_on), writes planned.
        writes_by_entity: dict[tuple[str, int], Any] = {}
        last_id = 0
        while True:
            rows = session.scalars(select(TrackedEntity).where(
                TrackedEntity.portal_id == ctx.portal_id, TrackedEntity.due_on <= day,
                TrackedEntity.entity_type.in_(opts.entity_types),  # the admin may have dropped a type
                TrackedEntity.id > last_id).order_by(TrackedEntity.id).limit(SCAN_CHUNK)).all()
            if not rows:
                break
            for row in rows:
                last_id = row.id
                e, steps = rules.decay_through(opts, engine.entity_of(row), day)
                if not steps:
                    engine.store(row, e, opts)  # stale dates from a settings change: just re-date
                    continue
                engine.store(row, e, opts)
                engine.add_history(session, row, steps)
                summary.decayed += 1
                planned = engine.plan_status_write(session, ctx, row,
                                                   f"daily:{day.isoformat()}:{row.entity_type}:{row.entity_id}:{row.status}",
                                                   job_run_id=job_id, check=False)
                if planned is not None:
                    writes_by_entity[(row.entity_type, row.entity_id)] = planned
            session.flush()

        # 2. Every change recorded since the previous run: the digest and the loss actions.
        lines = session.scalars(select(StatusHistory).where(
            StatusHistory.portal_id == ctx.portal_id, StatusHistory.id > last_line)
            .order_by(StatusHistory.id)).all()
        max_line = max([last_line] + [ln.id for ln in lines])
        by_entity: dict[tuple[str, int], list[StatusHistory]] = defaultdict(list)
        for ln in lines:
            if ln.cause == "decay":
                by_entity[(ln.entity_type, ln.entity_id)].append(ln)
                transitions[f"{ln.from_status}->{ln.to_status}"] += 1
                summary.steps += 1
        losses = {k: v for k, v in by_entity.items() if v[-1].to_status == LOST}
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
                    row.assigned_by_id = plan.new_assignee
                    summary.transfers += 1
                if extra:
                    _add_loss_fields(session, ctx, row, writes_by_entity.get(key), extra, its[-1].id, job_id)
            title = row.title if row is not None else None
            items += rules.items_for_steps(opts, steps, entity_type=key[0], entity_id=key[1], title=title,
                                           manager_id=manager, plan=plan)
        if opts.timeline_comments:
            summary.timeline_comments = _plan_timeline(session, ctx, lines, job_id)

        # 3. Warnings whose day fell since the previous run (a missed run still warns once).
        low = prev_day if prev_day is not None else day - dt.timedelta(days=1)
        warn_rows = session.scalars(select(TrackedEntity).where(
            TrackedEntity.portal_id == ctx.portal_id, TrackedEntity.warn_on > low, TrackedEntity.warn_on <= day,
            TrackedEntity.due_on > day, TrackedEntity.entity_type.in_(opts.entity_types))).all()
        for row in warn_rows:
            item = rules.warning_item(opts, engine.entity_of(row), day, entity_type=row.entity_type,
                                      entity_id=row.entity_id, title=row.title, manager_id=row.assigned_by_id,
                                      last_run_on=prev_day)
            if item is not None:
                items.append(item)
                summary.warnings += 1

        # 4. The messages, recorded before anything is sent.
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


def _rows_for(session, portal_id: int, keys) -> dict[tuple[str, int], TrackedEntity]:
    out: dict[tuple[str, int], TrackedEntity] = {}
    for kind in ("contact", "company"):
        ids = [i for k, i in keys if k == kind]
        for start in range(0, len(ids), 500):
            for row in session.scalars(select(TrackedEntity).where(
                    TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == kind,
                    TrackedEntity.entity_id.in_(ids[start:start + 500]))):
                out[(kind, row.entity_id)] = row
    return out


def _add_loss_fields(session, ctx: PortalContext, row: TrackedEntity, planned, extra: dict, line_id: int,
                     job_id: int) -> None:
    """Open / transfer the lost client in the same update that writes LOST when this run wrote it."""
    if planned is not None and planned.status == "pending":
        params = dict(planned.params)
        params["fields"] = {**params.get("fields", {}), **extra}
        planned.params = params
        return
    engine.plan_write(session, ctx.portal_id, f"loss:{row.entity_type}:{row.entity_id}:{line_id}",
                      f"crm.{row.entity_type}.update",
                      {"id": row.entity_id, "fields": extra, "params": {"REGISTER_SONET_EVENT": "N"}}, job_id,
                      check=False)


TIMELINE_TEXT = {
    "ru": {"decay": "Не забыт: статус сменился с «{a}» на «{b}».",
           "manager": "Не забыт: менеджер сменил статус с «{a}» на «{b}».",
           "revert": "Не забыт: статус возвращён на «{b}».",
           "deal": "Не забыт: по сделке статус сменился с «{a}» на «{b}».",
           "other": "Не забыт: статус «{b}»."},
    "en": {"decay": "Nezabyt: status changed from “{a}” to “{b}”.",
           "manager": "Nezabyt: the manager changed the status from “{a}” to “{b}”.",
           "revert": "Nezabyt: status reverted to “{b}”.",
           "deal": "Nezabyt: a deal changed the status from “{a}” to “{b}”.",
           "other": "Nezabyt: status “{b}”."},
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
                                                           b=ctx.opts.name_of(ln.to_status))
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


def pages(client, method: str, params: dict | None = None):
    """Every row of a list method that pages with `start`/`next` (user.get, department.get)."""
    start = 0
    while True:
        envelope = client.call_envelope(method, {**(params or {}), "start": start})
        rows = envelope.get("result") or []
        yield from rows
        nxt = envelope.get("next")
        if not nxt or not rows:
            return
        start = int(nxt)


def load_org(client) -> tuple[rules.Org, dict[int, str]]:
    """The company's structure and the users' names, read once per run."""
    departments = list(pages(client, "department.get"))
    users = list(pages(client, "user.get", {"FILTER": {"USER_TYPE": "employee"}}))
    names = {}
    for u in users:
        uid = engine.int_or_none(u.get("ID"))
        if uid is not None:
            names[uid] = " ".join(str(u.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip() or f"#{uid}"
    return rules.Org.from_rows(departments, users), names
