"""The one runner of the robots: executes a portal's stored robot calls (`process_robot_calls`) and
the robot timers due (`fire_due_timers`), each through its robot in the registry. Plain functions
over explicit inputs; the worker's job calls them.

Each call or timer is decided in its own transaction, which also plans its portal writes (Outbox),
its messages (NotificationLog) and its `bizproc.event.send` reply, all with unique keys; the
planned rows are sent in batches after the commit. A rerun after a crash sends only what is left
and decides nothing twice.
"""
from __future__ import annotations

import datetime as dt
import logging
import re

from sqlalchemy import select, union

from addon.bitrix.errors import PortalError, is_temporary
from addon.notifications import notification_command
from addon.outbox import SEND_CHUNK, store_answers
from addon.models import (PORTAL_ACTIVE, PORTAL_UNINSTALLED, NotificationLog, Outbox, Portal, RobotTimer,
                          StoredEvent, naive_utc, utcnow)
from addon.robots.calls import RobotCall
from addon.robots.registry import HANDLERS, TIMER_HANDLERS, parse_robot_code
from addon.robots.run import ROBOT_PENDING, Run

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


def parse_call(event: StoredEvent) -> RobotCall:
    payload = event.payload or {}
    code = str(payload.get("code") or event.event_name.split(":", 1)[-1])
    parsed = parse_robot_code(code)
    if parsed is None:
        raise ValueError(f"unknown robot {code!r}")
    robot, document_type = parsed
    document = payload.get("document_id")
    if isinstance(document, dict):
        document = [document.get(str(i)) for i in range(3)]
    raw = str(document[2]) if isinstance(document, list) and len(document) >= 3 else ""
    m = re.fullmatch(r"([A-Z]+)_(\d+)", raw)
    if not m or m.group(1).lower() != document_type:
        raise ValueError(f"robot {code} called for document {raw!r}")
    props = payload.get("properties") if isinstance(payload.get("properties"), dict) else {}
    # A robot registered without USE_SUBSCRIPTION Y is not waited for: the portal takes no reply to
    # it (bizproc-event-send.md), so its token is not kept for one.
    subscribed = str(payload.get("use_subscription") or "Y").upper() == "Y"
    token = str(payload.get("event_token") or "") if subscribed else ""
    return RobotCall(event.id, code, robot, document_type, int(m.group(2)), token, props)


# --- sending what was planned --------------------------------------------------------------------------

def portals_with_robot_work(services) -> list[int]:
    """The active portals with stored robot calls to run or robot writes and messages left to send:
    one query, so a pass visits those portals and not every portal every minute."""
    calls = select(StoredEvent.portal_id).where(StoredEvent.source == "robot", StoredEvent.processed_at.is_(None),
                                                StoredEvent.attempts < MAX_ATTEMPTS)
    unsent = [select(model.portal_id).where(model.status == ROBOT_PENDING) for model in (Outbox, NotificationLog)]
    with services.sessions() as session:
        return list(session.scalars(select(Portal.id).where(
            Portal.status == PORTAL_ACTIVE, Portal.id.in_(union(calls, *unsent))).order_by(Portal.id)))


def _has_unsent(session, portal_id: int) -> bool:
    return any(session.scalar(select(model.id).where(model.portal_id == portal_id, model.status == ROBOT_PENDING)
                              .limit(1)) is not None for model in (Outbox, NotificationLog))


def send_robot_writes(services, client, portal_id: int) -> int:
    """Send the portal's planned robot writes (replies included), then its robot messages, 50 a
    batch; each row is claimed while its batch is in flight and marked as soon as it is answered."""
    sent = 0
    for model, command in ((Outbox, lambda r: (r.method, r.params)), (NotificationLog, notification_command)):
        while True:
            with services.sessions() as session:
                query = select(model).where(model.portal_id == portal_id, model.status == ROBOT_PENDING) \
                    .order_by(model.id).limit(SEND_CHUNK)  # the one batch size of both queues
                if not services.settings.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                rows = session.scalars(query).all()
                if not rows:
                    break
                answer = client.batch({str(r.id): command(r) for r in rows})
                done, transient = store_answers(session, model, rows, answer,
                                                max_attempts=services.settings.send_attempts)
                sent += done
                session.commit()
            if transient:  # the portal is struggling: the rest waits for the next pass
                return sent
    return sent


# --- the two entry points ----------------------------------------------------------------------------

def process_robot_calls(services, portal_id: int, now: dt.datetime, limit: int = 200, client=None) -> int:
    """Execute the portal's stored robot calls (oldest first); returns how many were completed.

    A call whose item is gone is answered and marked; a call that fails keeps its error and is
    tried again next time: while the portal refuses for a passing reason, for as long as that
    lasts; a failure of its own, up to MAX_ATTEMPTS times."""
    now = naive_utc(now)
    done = 0
    with services.sessions() as session:
        events = session.scalars(select(StoredEvent).where(
            StoredEvent.portal_id == portal_id, StoredEvent.source == "robot", StoredEvent.processed_at.is_(None),
            StoredEvent.attempts < MAX_ATTEMPTS).order_by(StoredEvent.id).limit(limit)).all()
        if not events:
            if _has_unsent(session, portal_id):  # left over from a pass the portal cut short
                run = Run(services, session, portal_id, now, client)
                try:
                    send_robot_writes(services, run.client, portal_id)
                finally:
                    run.close()
            return 0
        run = Run(services, session, portal_id, now, client)
        try:
            calls: dict[int, RobotCall | Exception] = {}
            for event in events:
                try:
                    calls[event.id] = parse_call(event)
                except (ValueError, KeyError, TypeError) as exc:
                    calls[event.id] = exc
            event_ids = [e.id for e in events]
            try:
                run.prefetch((c.document_type, c.entity_id) for c in calls.values() if isinstance(c, RobotCall))
            except Exception as exc:  # the portal is unreachable: nothing is decided, try again later
                _fail(session, event_ids, exc)
                session.commit()
                raise
            session.commit()
            for event_id in event_ids:
                # Claim the call: on PostgreSQL a second worker skips a call this one is executing.
                query = select(StoredEvent).where(StoredEvent.id == event_id, StoredEvent.processed_at.is_(None)) \
                    .execution_options(populate_existing=True)
                if not services.settings.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                event = session.scalar(query)
                if event is None:
                    session.rollback()
                    continue
                call = calls[event_id]
                try:
                    if isinstance(call, Exception):
                        raise call
                    item = run.item(call.document_type, call.entity_id)
                    if item is None:
                        run.reply(f"call:{call.event_id}", call.event_token, {}, "the item no longer exists")
                    else:
                        HANDLERS[call.robot](run, call, item)
                    event.processed_at = utcnow()
                    event.error = None
                    session.commit()
                    done += 1
                except (ValueError, KeyError, TypeError) as exc:  # a malformed call never gets better
                    session.rollback()
                    event = session.get(StoredEvent, event_id)
                    event.processed_at, event.error, event.attempts = utcnow(), f"refused: {exc}"[:2000], event.attempts + 1
                    token = (event.payload or {}).get("event_token")
                    if isinstance(token, str) and token:  # let the workflow go on instead of waiting for us
                        run.reply(f"call:{event_id}", token, {}, f"Nezabyt refused this call: {exc}"[:500])
                    session.commit()
                except Exception as exc:
                    session.rollback()
                    _fail(session, [event_id], exc)
                    session.commit()
                    log.warning("robot call %s failed: %s", event_id, exc)
            send_robot_writes(services, run.client, portal_id)
        finally:
            run.close()
    return done


def _fail(session, event_ids: list[int], exc: Exception) -> None:
    """Note why the calls wait. A passing refusal (the rate limit, a 5xx, a blocked or unpaid
    portal) spends none of a call's attempts: it waits for the portal, however long that takes;
    only a failure of our own or of the call counts towards MAX_ATTEMPTS."""
    spend = not (isinstance(exc, PortalError) and is_temporary(exc))
    for event_id in event_ids:
        event = session.get(StoredEvent, event_id)
        event.attempts += int(spend)
        event.error = f"{type(exc).__name__}: {exc}"[:2000]


def _fire_portal_timers(services, session, run: Run, timer_ids: list[int], now: dt.datetime) -> int:
    portal = session.get(Portal, run.portal_id)
    if portal is None or portal.status != PORTAL_ACTIVE:
        # The app is gone from this portal (or waits for re-authorisation): nothing can be done there.
        if portal is None or portal.status == PORTAL_UNINSTALLED:
            for timer in session.scalars(select(RobotTimer).where(RobotTimer.id.in_(timer_ids))):
                timer.status = "cancelled"
            session.commit()
        return 0
    timers = session.scalars(select(RobotTimer).where(RobotTimer.id.in_(timer_ids))).all()
    try:
        run.prefetch((t.state["document_type"], int(t.state["entity_id"])) for t in timers
                     if "document_type" in (t.state or {}))
    except Exception as exc:  # the portal is unreachable: every timer waits for the next pass
        log.warning("robot timers of portal %s wait: %s", run.portal_id, exc)
        return 0
    session.commit()
    fired = 0
    for timer_id in timer_ids:
        query = select(RobotTimer).where(RobotTimer.id == timer_id).execution_options(populate_existing=True)
        if not services.settings.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        timer = session.scalar(query)
        if timer is None or timer.status != "waiting" or timer.due_at > now:
            session.rollback()
            continue
        try:
            TIMER_HANDLERS[timer.robot](run, timer)
            timer.fired_at = now
            session.commit()
            fired += 1
        except PortalError as exc:  # the portal is struggling: try again next pass
            session.rollback()
            log.warning("robot timer %s waits: %s", timer_id, exc)
        except Exception as exc:  # a timer that cannot be fired gives up after a few tries
            session.rollback()
            timer = session.get(RobotTimer, timer_id)
            state = dict(timer.state or {})
            state["failures"] = int(state.get("failures", 0)) + 1
            state["error"] = f"{type(exc).__name__}: {exc}"[:500]
            timer.state = state
            if state["failures"] >= MAX_ATTEMPTS:
                timer.status = "failed"
            session.commit()
            log.warning("robot timer %s failed: %s", timer_id, exc)
    send_robot_writes(services, run.client, run.portal_id)
    return fired


def fire_due_timers(services, now: dt.datetime, portal_id: int | None = None, limit: int = 500,
                    client=None) -> int:
    """Fire every robot timer due at `now` (all portals, or one); returns how many fired.

    On PostgreSQL each timer is claimed with FOR UPDATE SKIP LOCKED, so several workers never fire
    the same timer; its decision, planned writes and next due time commit together."""
    now = naive_utc(now)
    fired = 0
    with services.sessions() as session:
        query = select(RobotTimer.id, RobotTimer.portal_id).where(
            RobotTimer.status == "waiting", RobotTimer.due_at <= now).order_by(RobotTimer.due_at).limit(limit)
        if portal_id is not None:
            query = query.where(RobotTimer.portal_id == portal_id)
        due: dict[int, list[int]] = {}
        for timer_id, pid in session.execute(query):
            due.setdefault(pid, []).append(timer_id)
    for pid, timer_ids in due.items():
        with services.sessions() as session:
            run = Run(services, session, pid, now, client)
            try:
                fired += _fire_portal_timers(services, session, run, timer_ids, now)
            finally:
                run.close()
    return fired


