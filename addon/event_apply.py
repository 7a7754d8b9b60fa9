"""Applying what a batch of stored events says (addon.event_reads) to the service table, one
client at a time by the status rules: calls (a late one replays the decays it would have
prevented), deals, new and deleted clients, a manager's change recorded or reverted, and our own
writes recognised as echoes; each status the portal must show planned in the outbox."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from addon import engine, notifications, outbox, rules
from addon.bitrix.errors import PortalError
from addon.engine import PortalContext
from addon.event_reads import BatchReading, Touch, is_gone
from addon.models import StatusHistory, StoredEvent, TrackedEntity, utcnow
from addon.options import Options


@dataclass
class Applied:
    """What applying one batch did."""

    steps: int = 0
    reverts: int = 0
    processed: int = 0
    failed: int = 0


def apply_batch(session, ctx: PortalContext, batch: BatchReading, events: list[StoredEvent], now: dt.datetime, *,
                safe: bool) -> Applied:
    """Apply every touched client and mark the events; commit. With `safe`, each client in a
    savepoint and its failure recorded on its events (attempts+1) instead of raised."""
    failed, done_ids = dict(batch.failed), set(batch.done_ids)
    touches, snapshots, open_counts, rows = batch.touches, batch.snapshots, batch.open_counts, batch.rows
    counts = Applied()
    for key, t in touches.items():
        snap = snapshots.get(key)
        if isinstance(snap, PortalError):
            if is_gone(snap):
                t.deleted = True
            else:
                failed.update({i: str(snap) for i in t.event_ids})
                continue
        if any(i in failed for i in t.event_ids):
            continue
        if not safe:
            counts.steps += _apply(session, ctx, key, t, rows.get(key), snap, open_counts.get(key), now, counts)
            done_ids.update(t.event_ids)
            continue
        try:
            with session.begin_nested():
                counts.steps += _apply(session, ctx, key, t, rows.get(key), snap, open_counts.get(key), now, counts)
            done_ids.update(t.event_ids)
        except Exception as exc:  # noqa: BLE001 — one bad client must not block the others
            failed.update({i: f"{type(exc).__name__}: {exc}" for i in t.event_ids})
    stamp = utcnow()
    for ev in events:
        if ev.id in failed:
            ev.attempts = (ev.attempts or 0) + 1
            ev.error = failed[ev.id][:2000]
            counts.failed += 1
        elif ev.id in done_ids:
            ev.processed_at, ev.error = stamp, None
            counts.processed += 1
        else:
            ev.attempts = (ev.attempts or 0) + 1
            ev.error = "not processed"
            counts.failed += 1
    session.commit()
    return counts


def revert_message(opts: Options, day: dt.date, entity_type: str, entity_id: int, title: str | None,
                   manager_id: int, rejected: str | None, restored: str | None, problem: str | None) -> str:
    item = rules.revert_item(opts, entity_type=entity_type, entity_id=entity_id, title=title, manager_id=manager_id,
                             rejected_status=rejected, restored_status=restored, problem=problem)
    return rules.item_text(opts, day, item, {})


def _apply(session, ctx: PortalContext, key: tuple[str, int], t: Touch, row: TrackedEntity | None, snap: Any,
           open_count: int | None, now: dt.datetime, counts: Applied) -> int:
    """Apply one client's calls, deals and current fields, in the order they happened."""
    opts = ctx.opts
    kind, eid = key
    stamp = f"{max(t.event_ids)}"
    counted = [0]

    def hist(steps, **kw):
        counted[0] += len(steps)
        return engine.add_history(session, row, steps, **kw)

    if t.deleted:
        if row is not None:
            hist([rules.Step(row.status, None, ctx.today(now), "manager")], note="deleted in the portal")
            session.delete(row)
        return counted[0]
    fields = snap if isinstance(snap, dict) else None
    # The value the portal holds now, if we read it; else what we last knew.
    portal_status = ctx.code_of(kind, fields.get(engine.STATUS_FIELD)) if fields is not None else (
        row.status if row is not None else None)
    if fields is not None and row is not None:
        row.assigned_by_id = engine.int_or_none(fields.get("ASSIGNED_BY_ID")) or row.assigned_by_id
        row.title = engine.entity_title(kind, fields)
        moment = engine.parse_portal_time(fields.get("DATE_MODIFY"), ctx.tz)
        row.last_modified = moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment else row.last_modified

    today = ctx.today(now)
    # Items in the order they happened; on one day calls come first (a call makes that day's
    # change legitimate), then deals, then the manager's edit.
    items: list[tuple[dt.date, int, str, Any]] = [(d, 0, "call", None) for d in t.calls]
    if t.deals:
        day, deal_id, outcome = max(t.deals, key=lambda d: (d[0], d[2] is not None))
        items.append((day, 1, "deal", (deal_id, outcome)))
    if fields is not None:
        changed_on = ctx.day_of(fields.get("DATE_MODIFY")) or today
        items.append((changed_on, 2, "fields", None))
    items.sort(key=lambda x: (x[0], x[1]))

    if row is None:
        if fields is None:
            return 0
        row = _start_tracking(session, ctx, kind, eid, fields, t, portal_status, stamp, counts)
        if row is None:
            return 0
        # Calls on a client that just came onto the ladder still count for its timer.
        e = engine.entity_of(row)
        for day, _, what, _ in items:
            if what == "call":
                e, steps = rules.record_call(opts, e, day)
                hist(steps)
        engine.store(row, e, opts)
        _write_if_needed(session, ctx, row, portal_status if row.written_status is None else row.status, stamp)
        return counted[0] + 1

    e = engine.entity_of(row)
    before = e.status
    for day, _, what, payload in items:
        if what == "call":
            e = _call(session, opts, row, e, day, hist)
        elif what == "deal":
            deal_id, outcome = payload
            count = open_count if open_count is not None else e.open_deals
            if outcome is not None and _outcome_seen(session, row, deal_id, outcome):
                outcome = None  # a replayed closed deal must not restart the timer again
            if count == e.open_deals and outcome is None:
                continue
            e, steps = rules.apply_deals(opts, e, count, outcome, day)
            hist(steps, note=f"deal {deal_id} {outcome}" if outcome else f"deal {deal_id}")
        else:
            changed_on = day
            # The edit is judged as of its day: the client is first brought up to date through
            # it (a portal still showing a status that has since decayed is a change back to it).
            e, steps = rules.decay_through(opts, e, changed_on)
            hist(steps)
            verdict_kind = rules.classify_change(e.status, portal_status, row.written_status)
            if verdict_kind != "manual":
                if verdict_kind == "echo":
                    row.written_status = None
                continue
            reason = ctx.reason_of(kind, fields.get(engine.REASON_FIELD))
            by_user = engine.int_or_none(fields.get("MODIFY_BY_ID"))
            e, steps, verdict = rules.handle_manual_change(opts, e, portal_status, changed_on, e.last_call_on, reason)
            hist(steps, by_user_id=by_user, note=None if verdict.allowed else verdict.problem)
            if verdict.allowed:
                row.reason = reason
                row.written_status = None
            else:
                engine.store(row, e, opts)
                _revert(session, ctx, row, stamp, today, by_user, portal_status, e.status, verdict.problem, counts)
                # The portal now shows what we are about to write back.
                portal_status = e.status
    engine.store(row, e, opts)
    if e.status is None and before is not None:
        row.due_on = row.warn_on = None
    _write_if_needed(session, ctx, row, portal_status, stamp)
    return counted[0]


def _call(session, opts: Options, row: TrackedEntity, e: rules.Entity, day: dt.date, hist) -> rules.Entity:
    """A completed call dated `day`. If daily runs already decayed the client past that day (the
    call reached us late: Bitrix24's queue, a reconcile pass, downtime), those decay steps are
    undone and the client replayed from the call — the status is what it would have been had the
    call been seen in time (DESIGN §1). The replay goes no further than the runs already went."""
    undone_rows, prior = _decays_after(session, row, day)
    if not undone_rows or prior is None or prior.to_status != undone_rows[0].from_status:
        e, steps = rules.record_call(opts, e, day)
        hist(steps)
        return e
    undone = [rules.Step(r.from_status, r.to_status, r.changed_on, r.cause) for r in undone_rows]
    replay = rules.late_call(opts, e, day, undone[-1].on, undone, prior_set_on=prior.changed_on,
                             prior_previous=prior.from_status)
    note = f"undone: a call on {day.isoformat()} reached us late"
    for r in undone_rows:
        r.note = f"{r.note}; {note}" if r.note else note
    hist([rules.Step(e.status, undone[0].from_status, day, "revert")], note=note)
    hist(list(replay.steps))
    return replay.entity


def _decays_after(session, row: TrackedEntity, day: dt.date) -> tuple[list[StatusHistory], StatusHistory | None]:
    """The client's newest history lines that are decays dated after `day` (oldest first), and the
    line before them (which set the status they decayed from)."""
    lines = session.scalars(select(StatusHistory).where(
        StatusHistory.portal_id == row.portal_id, StatusHistory.entity_type == row.entity_type,
        StatusHistory.entity_id == row.entity_id).order_by(StatusHistory.id.desc()).limit(32)).all()
    undone: list[StatusHistory] = []
    for line in lines:
        if line.cause == "decay" and line.changed_on > day and "undone:" not in (line.note or ""):
            undone.append(line)
            continue
        return list(reversed(undone)), line if undone else None
    return list(reversed(undone)), None


def _write_if_needed(session, ctx: PortalContext, row: TrackedEntity, portal_status: str | None, stamp: str) -> None:
    """Write our status to the portal when it differs from what the portal shows."""
    if row.status != portal_status and (row.status is not None or portal_status is not None):
        if row.written_status == row.status and portal_status == row.status:
            return
        # The key holds the newest event id of the batch: planned in the batch's transaction, once.
        outbox.plan_status_write(session, ctx, row, f"live:{row.entity_type}:{row.entity_id}:{stamp}:{row.status}",
                                 check=False)


def _outcome_seen(session, row: TrackedEntity, deal_id: int, outcome: str) -> bool:
    return session.scalar(select(StatusHistory.id).where(
        StatusHistory.portal_id == row.portal_id, StatusHistory.entity_type == row.entity_type,
        StatusHistory.entity_id == row.entity_id, StatusHistory.note == f"deal {deal_id} {outcome}").limit(1)) is not None


def _start_tracking(session, ctx: PortalContext, kind: str, eid: int, fields: dict, t: Touch,
                    portal_status: str | None, stamp: str, counts: Applied) -> TrackedEntity | None:
    """A client we do not track yet: a new one gets NEW (option), one a manager put on the ladder
    is tracked from that day (a required reason is still checked)."""
    opts = ctx.opts
    row = TrackedEntity(portal_id=ctx.portal_id, entity_type=kind, entity_id=eid, open_deals=0,
                        assigned_by_id=engine.int_or_none(fields.get("ASSIGNED_BY_ID")),
                        title=engine.entity_title(kind, fields))
    if portal_status is None:
        created_on = ctx.day_of(fields.get("DATE_CREATE"))
        if not t.added or created_on is None:
            return None
        e = rules.new_entity(opts, created_on)
        if e is None:
            return None
        session.add(row)
        engine.store(row, e, opts)
        engine.add_history(session, row, [rules.Step(None, e.status, created_on, "new")])
        outbox.plan_status_write(session, ctx, row, f"new:{kind}:{eid}")
        return row
    changed_on = ctx.day_of(fields.get("DATE_MODIFY")) or ctx.day_of(fields.get("DATE_CREATE"))
    reason = ctx.reason_of(kind, fields.get(engine.REASON_FIELD))
    empty = rules.Entity(status=None, status_set_on=None)
    by_user = engine.int_or_none(fields.get("MODIFY_BY_ID"))
    e, steps, verdict = rules.handle_manual_change(opts, empty, portal_status, changed_on, None, reason)
    session.add(row)
    engine.add_history(session, row, steps, by_user_id=by_user, note=None if verdict.allowed else verdict.problem)
    if not verdict.allowed:
        # Back to the empty field; nothing is tracked.
        row.status = None
        _revert(session, ctx, row, stamp, changed_on, by_user, portal_status, None, verdict.problem, counts)
        return None
    row.reason = reason
    engine.store(row, e, opts)
    return row


def _revert(session, ctx: PortalContext, row: TrackedEntity, stamp: str, day: dt.date, by_user: int | None,
            refused: str | None, restored: str | None, problem: str | None, counts: Applied) -> None:
    """A refused change goes back on the portal: the tracked status is written over it, and whoever
    made the change (else the client's manager) is told why in the day's messages."""
    key = f"revert:{row.entity_type}:{row.entity_id}:{stamp}"
    outbox.plan_status_write(session, ctx, row, key, check=False)
    recipient = by_user or row.assigned_by_id
    if recipient:
        notifications.plan_message(session, ctx.portal_id, key, recipient, day, "revert",
                                   revert_message(ctx.opts, day, row.entity_type, row.entity_id, row.title, recipient,
                                                  refused, restored, problem))
    counts.reverts += 1
