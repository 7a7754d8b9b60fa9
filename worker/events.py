"""Processing stored events, a portal at a time, in batches: read what changed with batched gets,
then apply the status rules — manual changes recorded or reverted, calls, deals, new and deleted
entities, and our own writes recognised as echoes.

Reads are planned per batch, not per event: every entity, activity and deal named by the batch is
read once with batched `get`s (50 per HTTP call), and the open deals of every touched client are
counted with one ID-windowed list, so a burst of 1,000 events costs about 20 calls.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from addon import engine, rules
from addon.engine import PortalContext
from addon.models import StatusHistory, StoredEvent, TrackedEntity, utcnow
from addon.options import Options

EVENT_RE = re.compile(r"^ONCRM(CONTACT|COMPANY|DEAL|ACTIVITY)(ADD|UPDATE|DELETE)$")
OWNER_TYPES = {"3": "contact", "4": "company"}
MAX_ATTEMPTS = 8
BATCH_SIZE = 1000
log = logging.getLogger(__name__)
ENTITY_SELECT = ("ID", "NAME", "LAST_NAME", "TITLE", "ASSIGNED_BY_ID", "MODIFY_BY_ID", "DATE_MODIFY",
                 "DATE_CREATE", engine.STATUS_FIELD, engine.REASON_FIELD)

@dataclass
class EventsReport:
    portal_id: int
    events: int = 0
    processed: int = 0
    failed: int = 0
    steps: int = 0
    reverts: int = 0
    writes_sent: int = 0
    messages_sent: int = 0
    rest_calls: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Touch:
    """Everything one batch says about one contact or company."""

    event_ids: list[int] = field(default_factory=list)
    snapshot: bool = False  # an ADD/UPDATE asks us to read its fields
    added: bool = False
    deleted: bool = False
    calls: list[dt.date] = field(default_factory=list)
    deals: list[tuple[dt.date, int, str | None]] = field(default_factory=list)  # (day, deal id, outcome)


def parse_event(ev: StoredEvent) -> tuple[str | None, str | None, int | None]:
    """(object kind: contact|company|deal|activity, action: ADD|UPDATE|DELETE, id) of a stored event."""
    m = EVENT_RE.match((ev.event_name or "").upper())
    if m is None:
        if (ev.event_name or "").upper() == "ONVOXIMPLANTCALLEND":
            data = (ev.payload or {}).get("data") or {}
            return "activity", "UPDATE", engine.int_or_none(data.get("CRM_ACTIVITY_ID"))
        return None, None, None
    kind, action = m.group(1).lower(), m.group(2)
    entity_id = ev.entity_id
    if entity_id is None:
        data = (ev.payload or {}).get("data") or {}
        entity_id = engine.int_or_none(((data.get("FIELDS") or {}) if isinstance(data, dict) else {}).get("ID"))
    return kind, action, entity_id


def pending_events(session, portal_id: int, limit: int) -> list[StoredEvent]:
    return list(session.scalars(
        select(StoredEvent).where(StoredEvent.portal_id == portal_id, StoredEvent.processed_at.is_(None),
                                  StoredEvent.source != "robot", StoredEvent.attempts < MAX_ATTEMPTS)
        .order_by(StoredEvent.id).limit(limit)))


def has_pending(services, portal_id: int) -> bool:
    with services.sessions() as session:
        return bool(pending_events(session, portal_id, 1))


def process_events(services, portal_id: int, now: dt.datetime, *, client=None, limit: int = BATCH_SIZE,
                   keep=None) -> EventsReport:
    """Process up to `limit` pending events of one portal; repeat until none is left.
    The caller holds the portal's lease; `keep()` renews it between batches."""
    from addon.bitrix.client import portal_client

    own = client is None
    client = client or portal_client(services, portal_id)
    report = EventsReport(portal_id)
    before, started = client.stats.http_requests, time.monotonic()
    try:
        # Writes planned by an earlier pass that died before sending: send them first, so their
        # echoes and our reads see the portal as the service table does.
        engine.flush(services, client, portal_id)
        while True:
            done = _process_batch(services, client, portal_id, now, limit, report)
            if keep is not None:
                keep()
            if done < limit:
                break
        w, m = engine.flush(services, client, portal_id)
        report.writes_sent += w
        report.messages_sent += m
    finally:
        report.rest_calls = client.stats.http_requests - before
        if own:
            client.close()
    seconds = round(time.monotonic() - started, 3)
    log.info("event batch: portal %s, %d events, %d processed, %d failed, %d REST calls, %.1f s", portal_id,
             report.events, report.processed, report.failed, report.rest_calls, seconds,
             extra={"job": "events", **asdict(report), "errors": len(report.errors), "seconds": seconds})
    return report


def _process_batch(services, client, portal_id: int, now: dt.datetime, limit: int, report: EventsReport) -> int:
    from addon.bitrix.client import PortalError

    with services.sessions() as session:
        ctx = engine.load_context(session, portal_id)
        opts = ctx.opts
        events = pending_events(session, portal_id, limit)
        if not events:
            return 0
        report.events += len(events)
        touches: dict[tuple[str, int], _Touch] = defaultdict(_Touch)
        activity_events: dict[int, list[int]] = defaultdict(list)
        deal_events: dict[int, list[int]] = defaultdict(list)
        done_ids: set[int] = set()
        for ev in events:
            kind, action, oid = parse_event(ev)
            if kind is None or oid is None:
                done_ids.add(ev.id)  # not ours to act on (install, uninstall, leads ...)
            elif kind in ("contact", "company"):
                if kind not in opts.entity_types:
                    done_ids.add(ev.id)
                    continue
                t = touches[(kind, oid)]
                t.event_ids.append(ev.id)
                if action == "DELETE":
                    t.deleted = True
                else:
                    t.snapshot = True
                    t.added = t.added or action == "ADD"
            elif action == "DELETE":
                done_ids.add(ev.id)  # a deleted call or deal changes no status
            elif kind == "activity":
                activity_events[oid].append(ev.id)
            else:
                deal_events[oid].append(ev.id)

        failed: dict[int, str] = {}

        # --- reads: activities and deals first, they name more clients to touch --------------
        if activity_events:
            try:
                activities = client.get_many("crm.activity.get", list(activity_events))
            except PortalError as exc:
                activities = {aid: exc for aid in activity_events}
            calls = [aid for aid, act in activities.items()
                     if not isinstance(act, PortalError) and _is_completed_call(act)]
            try:
                bindings = _call_bindings(client, calls)
            except PortalError as exc:
                bindings = {aid: exc for aid in calls}
            for aid, act in activities.items():
                ids = activity_events[aid]
                if isinstance(act, PortalError) or isinstance(bindings.get(aid), PortalError):
                    error = act if isinstance(act, PortalError) else bindings[aid]
                    if _is_gone(error):
                        done_ids.update(ids)
                    else:
                        failed.update({i: str(error) for i in ids})
                    continue
                call = _completed_call(ctx, act, bindings.get(aid) or [])
                owners = [o for o in call[0] if o[0] in opts.entity_types] if call is not None else []
                if not owners:
                    done_ids.update(ids)
                    continue
                for owner in owners:  # the client called, and its company with it (the bindings)
                    t = touches[owner]
                    t.calls.append(call[1])
                    t.event_ids.extend(ids)
        if deal_events:
            try:
                deals = client.get_many("crm.deal.get", list(deal_events))
            except PortalError as exc:
                deals = {did: exc for did in deal_events}
            for did, deal in deals.items():
                ids = deal_events[did]
                if isinstance(deal, PortalError):
                    if _is_gone(deal):
                        done_ids.update(ids)
                    else:
                        failed.update({i: str(deal) for i in ids})
                    continue
                day = ctx.day_of(deal.get("DATE_MODIFY")) or ctx.today(now)
                outcome = _deal_outcome(deal)
                linked = [("contact", engine.int_or_none(deal.get("CONTACT_ID"))),
                          ("company", engine.int_or_none(deal.get("COMPANY_ID")))]
                linked = [(k, i) for k, i in linked if i and k in opts.entity_types]
                if not linked:
                    done_ids.update(ids)
                for owner in linked:
                    t = touches[owner]
                    t.deals.append((day, did, outcome))
                    t.event_ids.extend(ids)

        # Only clients we track (or are asked about by their own events) matter.
        rows = _load_rows(session, portal_id, touches)
        for key in list(touches):
            t = touches[key]
            if key not in rows and not t.snapshot and not t.deleted:
                done_ids.update(t.event_ids)
                del touches[key]

        snapshots: dict[tuple[str, int], Any] = {}
        for kind in ("contact", "company"):
            ids = [i for (k, i), t in touches.items() if k == kind and t.snapshot and not t.deleted]
            if ids:
                try:
                    got = client.get_many(f"crm.{kind}.get", ids)
                except PortalError as exc:
                    got = {i: exc for i in ids}
                snapshots.update({(kind, i): v for i, v in got.items()})
        open_counts = _open_deals(client, {k for k, t in touches.items() if t.deals})

        # --- apply: all clients in one go; if one of them breaks, again one client at a time
        # in savepoints, so the failure stays with that client's events ----------------------
        event_ids = [ev.id for ev in events]
        try:
            _finish(session, ctx, touches, snapshots, open_counts, rows, events, dict(failed), set(done_ids), now,
                    report, safe=False)
        except Exception:  # noqa: BLE001
            session.rollback()
            events = list(session.scalars(select(StoredEvent).where(StoredEvent.id.in_(event_ids))))
            rows = _load_rows(session, portal_id, touches)
            _finish(session, ctx, touches, snapshots, open_counts, rows, events, failed, done_ids, now, report,
                    safe=True)
        return len(events)


def _finish(session, ctx: PortalContext, touches, snapshots, open_counts, rows, events, failed: dict[int, str],
            done_ids: set[int], now: dt.datetime, report: EventsReport, *, safe: bool) -> None:
    """Apply every touched client and mark the events; commit. With `safe`, each client in a
    savepoint and its failure recorded on its events (attempts+1) instead of raised."""
    from addon.bitrix.client import PortalError

    counts = EventsReport(report.portal_id)
    for key, t in touches.items():
        snap = snapshots.get(key)
        if isinstance(snap, PortalError):
            if _is_gone(snap):
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
    report.steps += counts.steps
    report.reverts += counts.reverts
    report.failed += counts.failed
    report.processed += counts.processed


def _is_gone(error) -> bool:
    return "not found" in f"{getattr(error, 'description', '')} {getattr(error, 'code', '')}".lower()


def _call_bindings(client, activity_ids: list[int]) -> dict[int, list | Any]:
    """Every item each call is bound to, from crm.activity.binding.list (crm.activity.get has no
    BINDINGS), batched 50 activities per HTTP call; an activity's error stays with it."""
    if not activity_ids:
        return {}
    return client.get_many("crm.activity.binding.list", activity_ids, id_param="activityId")


def _is_completed_call(act: dict) -> bool:
    """A call (TYPE_ID 2) that took place (COMPLETED Y)."""
    return str(act.get("TYPE_ID")) == "2" and str(act.get("COMPLETED")).upper() == "Y"


def _completed_call(ctx: PortalContext, act: dict, bindings: list) -> tuple[list[tuple[str, int]], dt.date] | None:
    """([(kind, id) of every contact/company the call is bound to], day) of a completed call; None
    for anything else. The owner comes from crm.activity.get, the other items from
    crm.activity.binding.list (`bindings`): a call to a company's contact person is bound to both,
    and a call logged on a deal to its contact and company, so each of them was called."""
    if not _is_completed_call(act):
        return None
    day = ctx.day_of(act.get("END_TIME")) or ctx.day_of(act.get("START_TIME"))
    if day is None:
        return None
    owners: list[tuple[str, int]] = []
    pairs = [(act.get("OWNER_TYPE_ID"), act.get("OWNER_ID"))]
    pairs += [(b.get("entityTypeId"), b.get("entityId")) for b in bindings if isinstance(b, dict)]
    for type_id, raw_id in pairs:
        kind = OWNER_TYPES.get(str(type_id))
        owner_id = engine.int_or_none(raw_id)
        if kind is not None and owner_id is not None and (kind, owner_id) not in owners:
            owners.append((kind, owner_id))
    return (owners, day) if owners else None


def _deal_outcome(deal: dict) -> str | None:
    if str(deal.get("CLOSED", "N")).upper() != "Y" and deal.get("STAGE_SEMANTIC_ID") not in ("S", "F"):
        return None
    semantic = str(deal.get("STAGE_SEMANTIC_ID") or "")
    stage = str(deal.get("STAGE_ID") or "")
    if semantic == "S" or stage.endswith("WON"):
        return "won"
    return "lost"


def _open_deals(client, owners: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Open deals per client, one ID-windowed list per client kind (a page covers 50 deals)."""
    counts: dict[tuple[str, int], int] = {o: 0 for o in owners}
    for kind, fld in (("contact", "CONTACT_ID"), ("company", "COMPANY_ID")):
        ids = sorted(i for k, i in owners if k == kind)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for deal in client.list_all("crm.deal.list", filter={f"@{fld}": chunk, "CLOSED": "N"},
                                        select=["ID", "CONTACT_ID", "COMPANY_ID"]):
                owner = (kind, engine.int_or_none(deal.get(fld)))
                if owner in counts:
                    counts[owner] += 1
    return counts


def _load_rows(session, portal_id: int, touches) -> dict[tuple[str, int], TrackedEntity]:
    rows: dict[tuple[str, int], TrackedEntity] = {}
    for kind in ("contact", "company"):
        ids = [i for (k, i) in touches if k == kind]
        for start in range(0, len(ids), 500):
            for row in session.scalars(select(TrackedEntity).where(
                    TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == kind,
                    TrackedEntity.entity_id.in_(ids[start:start + 500]))):
                rows[(kind, row.entity_id)] = row
    return rows


def revert_message(opts: Options, day: dt.date, entity_type: str, entity_id: int, title: str | None,
                   manager_id: int, rejected: str | None, restored: str | None, problem: str | None) -> str:
    item = rules.revert_item(opts, entity_type=entity_type, entity_id=entity_id, title=title, manager_id=manager_id,
                             rejected_status=rejected, restored_status=restored, problem=problem)
    return rules.item_text(opts, day, item, {})


def _apply(session, ctx: PortalContext, key: tuple[str, int], t: _Touch, row: TrackedEntity | None, snap: Any,
           open_count: int | None, now: dt.datetime, report: EventsReport) -> int:
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
        row = _start_tracking(session, ctx, kind, eid, fields, t, portal_status, stamp, report)
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
                _revert(session, ctx, row, stamp, today, by_user, portal_status, e.status, verdict.problem, report)
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
        engine.plan_status_write(session, ctx, row, f"live:{row.entity_type}:{row.entity_id}:{stamp}:{row.status}",
                                 check=False)


def _outcome_seen(session, row: TrackedEntity, deal_id: int, outcome: str) -> bool:
    return session.scalar(select(StatusHistory.id).where(
        StatusHistory.portal_id == row.portal_id, StatusHistory.entity_type == row.entity_type,
        StatusHistory.entity_id == row.entity_id, StatusHistory.note == f"deal {deal_id} {outcome}").limit(1)) is not None


def _start_tracking(session, ctx: PortalContext, kind: str, eid: int, fields: dict, t: _Touch,
                    portal_status: str | None, stamp: str, report: EventsReport) -> TrackedEntity | None:
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
        engine.plan_status_write(session, ctx, row, f"new:{kind}:{eid}")
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
        _revert(session, ctx, row, stamp, changed_on, by_user, portal_status, None, verdict.problem, report)
        return None
    row.reason = reason
    engine.store(row, e, opts)
    return row


def _revert(session, ctx: PortalContext, row: TrackedEntity, stamp: str, day: dt.date, by_user: int | None,
            refused: str | None, restored: str | None, problem: str | None, report: EventsReport) -> None:
    """A refused change goes back on the portal: the tracked status is written over it, and whoever
    made the change (else the client's manager) is told why in the day's messages."""
    key = f"revert:{row.entity_type}:{row.entity_id}:{stamp}"
    engine.plan_status_write(session, ctx, row, key, check=False)
    recipient = by_user or row.assigned_by_id
    if recipient:
        engine.plan_message(session, ctx.portal_id, key, recipient, day, "revert",
                            revert_message(ctx.opts, day, row.entity_type, row.entity_id, row.title, recipient,
                                           refused, restored, problem))
    report.reverts += 1
