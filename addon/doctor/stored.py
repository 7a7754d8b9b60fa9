"""The doctor's checks of what is stored about one portal: its time zone and settings, the events
received, the last daily run, and parked methods or failing events, writes and messages."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from addon.doctor.check import Check, as_utc
from addon.models import PORTAL_ACTIVE, JobRun, NotificationLog, Outbox, Portal, StoredEvent, naive_utc
from addon.options import Options, OptionsError

EVENTS_WITHIN = dt.timedelta(days=1)


def check_time_zone(settings_data: dict[str, Any], portal_zone: str | None) -> tuple[Check, Any]:
    """(the check, the parsed Options or None): an unusable option set is reported here."""
    data = dict(settings_data or {})
    if not data.get("time_zone") and portal_zone:
        data["time_zone"] = portal_zone
    try:
        options = Options.from_dict(data)
    except OptionsError as exc:
        errors = getattr(exc, "errors", {}) or {"settings": str(exc)}
        name = "time zone" if "time_zone" in errors else "settings"
        return Check(name, False, "; ".join(f"{k}: {v}" for k, v in errors.items()),
                     "correct it on the app's settings page (a name like Europe/Moscow or an offset like +03:00)"), None
    return Check("time zone", True, f"{options.time_zone}, digest at {options.notify_time}"), options


def check_recent_events(session, portal_id: int, now: dt.datetime) -> Check:
    since = naive_utc(now) - EVENTS_WITHIN
    count = session.scalar(select(func.count()).select_from(StoredEvent).where(
        StoredEvent.portal_id == portal_id, StoredEvent.source == "online", StoredEvent.received_at >= since)) or 0
    if not count:
        return Check("events in the last day", False, "none received",
                     "the portal must reach NEZABYT_PUBLIC_URL/events: check the proxy's log and the event handlers")
    return Check("events in the last day", True, f"{count} received")


def check_last_daily_run(session, portal: Portal, tz, now: dt.datetime) -> Check:
    name = "last daily run"
    job = session.scalar(select(JobRun).where(JobRun.portal_id == portal.id, JobRun.kind == "daily")
                         .order_by(JobRun.id.desc()).limit(1))
    today = as_utc(now).astimezone(tz).date()
    if job is None:
        if portal.installed_at is not None and naive_utc(now) - portal.installed_at < dt.timedelta(days=1):
            return Check(name, True, "none yet (installed less than a day ago)")
        return Check(name, False, "never ran",
                     "the worker runs it at the portal's notification time: is `nezabyt worker` running?")
    day = dt.date.fromisoformat((job.params or {}).get("day") or today.isoformat())
    if job.status == "failed":
        return Check(name, False, f"{day} failed: {(job.error or '')[:120]}",
                     "see the worker's log; `nezabyt decay --portal P` runs it again")
    if day < today - dt.timedelta(days=1):
        return Check(name, False, f"{day} ({job.status}), {(today - day).days} days ago",
                     "is `nezabyt worker` running? (missed days catch up by themselves once it runs)")
    return Check(name, True, f"{day}: {job.status}")


def check_health(session, portal: Portal, now: dt.datetime) -> Check:
    """Parked methods, a portal waiting for re-authorization, events or writes that keep failing."""
    problems = []
    if portal.status != PORTAL_ACTIVE:
        problems.append(f"portal {portal.status}: {portal.status_reason or ''}".strip())
    moment = as_utc(now).timestamp()
    parked = sorted(m for m, until in (portal.parked_methods or {}).items() if float(until) > moment)
    if parked:
        problems.append(f"parked (operating time limit): {', '.join(parked)}")
    failing = session.scalar(select(func.count()).select_from(StoredEvent).where(
        StoredEvent.portal_id == portal.id, StoredEvent.processed_at.is_(None), StoredEvent.error.is_not(None))) or 0
    if failing:
        problems.append(f"{failing} events failing")
    since = naive_utc(now) - dt.timedelta(days=1)
    writes = session.scalar(select(func.count()).select_from(Outbox).where(
        Outbox.portal_id == portal.id, Outbox.status == "failed", Outbox.created_at >= since)) or 0
    messages = session.scalar(select(func.count()).select_from(NotificationLog).where(
        NotificationLog.portal_id == portal.id, NotificationLog.status == "failed",
        NotificationLog.created_at >= since)) or 0
    if writes or messages:
        problems.append(f"failed in the last day: {writes} writes, {messages} messages")
    if problems:
        return Check("parked or failing", False, "; ".join(problems),
                     "see the worker's log for the errors; a needs_reauth portal needs its admin to open the app")
    return Check("parked or failing", True, "nothing")

