"""Undoing a journal entry (addon.journal): each client a daily run or a bulk load changed gets its
previous status and responsible back on the portal — unless a manager (or a later run) changed it
since, which the portal's current values and our row tell; those are refused and listed.

UNDO_CHUNK changes at a time: the portal's current values read in batches of list calls, then in
ONE transaction each change is refused or its write planned in the Outbox (the echo marked on the
row); the writes are sent 50 a batch (outbox.send_outbox); then, by each write's answer, the row
gets its old values and a history line (cause "undo"), or the change is marked failed. A pass
killed anywhere and run again settles what was sent first and never writes a change twice."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import func, select

from addon import engine, journal, outbox, rules
from addon.bitrix import directory
from addon.bitrix.client import portal_client
from addon.engine import STATUS_FIELD, PortalContext
from addon.models import JobRun, JournalChange, Outbox, TrackedEntity, utcnow

UNDO_CHUNK = 500
log = logging.getLogger(__name__)


def run_undo(services, undo_run_id: int, now: dt.datetime, client=None, keep=None) -> dict[str, int]:
    """Run (or resume) the undo JobRun `undo_run_id`; returns its counts by outcome. Writes the
    portal refused for a passing reason are left for the next pass: the run goes back to "queued"."""
    with services.sessions() as session:
        undo = session.get(JobRun, undo_run_id)
        if undo is None or undo.kind != journal.UNDO_KIND:
            raise LookupError(f"no undo run {undo_run_id}")
        portal_id, entry_id = undo.portal_id, int(undo.params["entry_id"])
        by_user = undo.params.get("requested_by")
        ctx = engine.load_context(session, portal_id)
        undo.status, undo.started_at = "running", undo.started_at or utcnow()
        undo.progress_total = session.scalar(select(func.count()).select_from(JournalChange).where(
            JournalChange.job_run_id == entry_id)) or 0
        session.commit()
    today = ctx.today(now)
    own = client is None
    client = client or portal_client(services, portal_id)
    try:
        # A pass that died after sending: its answers are in the Outbox.
        outbox.send_outbox(services, client, portal_id)
        _settle(services, ctx, undo_run_id, entry_id, by_user, today)
        active = set(directory.active_users(client))
        while True:
            with services.sessions() as session:
                changes = session.scalars(select(JournalChange).where(
                    JournalChange.job_run_id == entry_id, JournalChange.undo_state.is_(None))
                    .order_by(JournalChange.id).limit(UNDO_CHUNK)).all()
                if not changes:
                    break
                current = _portal_values(client, ctx, changes)
                rows = _rows(session, portal_id, changes)
                for change in changes:
                    _plan(session, ctx, undo_run_id, change, current, rows, active)
                session.flush()
                _progress(session, undo_run_id, entry_id)
                session.commit()
            if keep is not None:
                keep()
            outbox.send_outbox(services, client, portal_id)
            _settle(services, ctx, undo_run_id, entry_id, by_user, today)
    finally:
        if own:
            client.close()
    with services.sessions() as session:
        counts = dict(session.execute(select(JournalChange.undo_state, func.count()).where(
            JournalChange.job_run_id == entry_id).group_by(JournalChange.undo_state)).all())
        undo = session.get(JobRun, undo_run_id)
        summary = {s: counts.get(s, 0) for s in (journal.UNDONE, journal.REFUSED, journal.FAILED, journal.SENDING)}
        # Put back as they were, under limits still as short: due again at the next run (the page says so).
        summary["due_again"] = session.scalar(select(func.count()).select_from(JournalChange).join(
            TrackedEntity, (TrackedEntity.portal_id == JournalChange.portal_id)
            & (TrackedEntity.entity_type == JournalChange.entity_type)
            & (TrackedEntity.entity_id == JournalChange.entity_id)).where(
            JournalChange.job_run_id == entry_id, JournalChange.undo_state == journal.UNDONE,
            TrackedEntity.due_on <= today)) or 0
        undo.summary = summary
        undo.progress_done = summary[journal.UNDONE] + summary[journal.REFUSED] + summary[journal.FAILED]
        if summary[journal.SENDING] or counts.get(None, 0):
            undo.status = "queued"  # the portal struggled: the next pass of the worker goes on
        else:
            undo.status, undo.finished_at = "done", utcnow()
        session.commit()
    log.info("undo of run %s on portal %s: %s", entry_id, portal_id, summary,
             extra={"job": "undo", "entry": entry_id, **summary})
    return summary


def _portal_values(client, ctx: PortalContext, changes) -> dict[tuple[str, int], dict[str, Any]]:
    """{(type, id): {"status": code, "assigned": user id}} as the portal holds them now (a client
    deleted since is not there), read 50 clients to a list call, all in batch calls."""
    commands = {}
    for entity_type in sorted({c.entity_type for c in changes}):
        ids = sorted({c.entity_id for c in changes if c.entity_type == entity_type})
        for i in range(0, len(ids), 50):
            commands[f"{entity_type}:{i}"] = (f"crm.{entity_type}.list", {
                "filter": {"@ID": ids[i:i + 50]}, "select": ["ID", STATUS_FIELD, "ASSIGNED_BY_ID"], "start": -1})
    answer = client.batch(commands)
    if answer.errors:
        raise next(iter(answer.errors.values()))
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for key, items in answer.results.items():
        entity_type = key.split(":")[0]
        for item in items or []:
            out[(entity_type, int(item["ID"]))] = {"status": ctx.code_of(entity_type, item.get(STATUS_FIELD)),
                                                   "assigned": engine.int_or_none(item.get("ASSIGNED_BY_ID"))}
    return out


def _rows(session, portal_id: int, changes) -> dict[tuple[str, int], TrackedEntity]:
    out = {}
    for entity_type in {c.entity_type for c in changes}:
        ids = [c.entity_id for c in changes if c.entity_type == entity_type]
        for row in session.scalars(select(TrackedEntity).where(
                TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == entity_type,
                TrackedEntity.entity_id.in_(ids))):
            out[(entity_type, row.entity_id)] = row
    return out


def refusal(change: JournalChange, portal: dict[str, Any] | None, row: TrackedEntity | None,
            active: set[int]) -> str | None:
    """Why this change is not taken back, or None: the client is gone or no longer tracked, its
    status or responsible is not what the entry left (on the portal or in our row: a manager or a
    later run changed it since), or the responsible to return it to has left."""
    if portal is None:
        return journal.GONE
    if row is None:
        return journal.UNTRACKED
    if portal["status"] != change.new_status or row.status != change.new_status:
        return journal.CHANGED_STATUS
    handed = change.old_assigned_by_id != change.new_assigned_by_id
    if handed and (portal["assigned"] != change.new_assigned_by_id or row.assigned_by_id != change.new_assigned_by_id):
        return journal.CHANGED_ASSIGNEE
    if handed and change.old_assigned_by_id is not None and change.old_assigned_by_id not in active:
        return journal.DEPARTED
    return None


def _plan(session, ctx: PortalContext, undo_run_id: int, change: JournalChange, current, rows, active) -> None:
    key = (change.entity_type, change.entity_id)
    row = rows.get(key)
    change.undo_run_id = undo_run_id
    why = refusal(change, current.get(key), row, active)
    if why is not None:
        change.undo_state, change.undo_note = journal.REFUSED, why
        return
    fields: dict[str, Any] = {}
    if change.old_status != change.new_status:
        try:
            fields[STATUS_FIELD] = ctx.item_id(change.entity_type, change.old_status)
        except KeyError:  # the admin has deleted that status since
            change.undo_state, change.undo_note = journal.REFUSED, journal.STATUS_REMOVED
            return
    if change.old_assigned_by_id != change.new_assigned_by_id:
        fields["ASSIGNED_BY_ID"] = change.old_assigned_by_id
    if not fields:
        # The entry set the status the client had (a load re-dating it): only our dates go back.
        _restore(session, ctx, row, change)
        change.undo_state = journal.UNDONE
        return
    outbox.plan_write(session, ctx.portal_id, f"undo:{undo_run_id}:{change.id}", f"crm.{change.entity_type}.update",
                      {"id": change.entity_id, "fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}},
                      undo_run_id, check=False)
    if STATUS_FIELD in fields:  # the echo of our own write is known as one (events.classify_change)
        row.written_status, row.written_at = change.old_status, utcnow()
    change.undo_state = journal.SENDING


def _restore(session, ctx: PortalContext, row: TrackedEntity, change: JournalChange) -> None:
    """The row as it was before the entry, re-dated under the current options."""
    row.status = change.old_status
    row.status_set_on = change.old_status_set_on
    row.previous_status = change.old_previous_status
    row.assigned_by_id = change.old_assigned_by_id
    engine.store(row, engine.entity_of(row), ctx.opts)


def _settle(services, ctx: PortalContext, undo_run_id: int, entry_id: int, by_user: int | None,
            today: dt.date) -> None:
    """The sent changes' answers: put back in our row and history, or failed with the portal's word."""
    while True:
        with services.sessions() as session:
            entry = session.get(JobRun, entry_id)
            changes = session.scalars(select(JournalChange).where(
                JournalChange.job_run_id == entry_id, JournalChange.undo_state == journal.SENDING)
                .order_by(JournalChange.id).limit(UNDO_CHUNK)).all()
            if not changes:
                return
            keys = {f"undo:{undo_run_id}:{c.id}": c for c in changes}
            writes = {o.key: o for o in session.scalars(select(Outbox).where(
                Outbox.portal_id == ctx.portal_id, Outbox.key.in_(list(keys))))}
            rows = _rows(session, ctx.portal_id, changes)
            settled = 0
            for key, change in keys.items():
                write = writes.get(key)
                if write is None or write.status in outbox.WAITING:
                    continue  # a passing refusal: sent again by the next pass
                settled += 1
                row = rows.get((change.entity_type, change.entity_id))
                if write.status == "failed" or row is None:
                    change.undo_state, change.undo_note = journal.FAILED, (write.error or "")[:500] or journal.GONE
                    if row is not None and row.written_status == change.old_status:
                        row.written_status = None
                    continue
                assignee = change.old_assigned_by_id if change.old_assigned_by_id != change.new_assigned_by_id else None
                from_status = row.status
                _restore(session, ctx, row, change)
                engine.add_history(session, row, [rules.Step(from_status, row.status, today, "undo")],
                                   by_user_id=by_user, note=journal.undo_note(ctx.language, entry, assignee))
                change.undo_state = journal.UNDONE
            session.flush()
            _progress(session, undo_run_id, entry_id)
            session.commit()
            if settled < len(changes):
                return


def _progress(session, undo_run_id: int, entry_id: int) -> None:
    """The undo's progress for the page: the changes it has finished with."""
    undo = session.get(JobRun, undo_run_id)
    undo.progress_done = session.scalar(select(func.count()).select_from(JournalChange).where(
        JournalChange.job_run_id == entry_id,
        JournalChange.undo_state.in_((journal.UNDONE, journal.REFUSED, journal.FAILED)))) or 0
