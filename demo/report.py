"""The demo's summary: its figures read back from the database and the devportal, and the text."""
from __future__ import annotations

import datetime as dt
import time
from collections import Counter

from sqlalchemy import func, select

from addon.models import JobRun, NotificationLog, StatusHistory, StoredEvent, TrackedEntity
from demo.config import DemoResult


def read_result(demo) -> DemoResult:
    """The summary's figures, read back from the database and the devportal's call log."""
    dp = demo.srv.portal
    res = DemoResult(database_url=demo.services.settings.database_url, portal_id=demo.portal_id,
                     devportal_url=demo.srv.url, app_url=demo.app.url, first_day=demo.first_day,
                     last_day=demo.first_day + dt.timedelta(days=demo.config.days),
                     tracked_at_start=demo.tracked_at_start)
    with demo.services.sessions() as session:
        pid = demo.portal_id
        lines = session.execute(select(StatusHistory.from_status, StatusHistory.to_status, StatusHistory.cause,
                                       func.count()).where(
            StatusHistory.portal_id == pid, StatusHistory.changed_on > demo.first_day)
            .group_by(StatusHistory.from_status, StatusHistory.to_status, StatusHistory.cause)).all()
        transitions: Counter = Counter()
        causes: Counter = Counter()
        for frm, to, cause, n in lines:
            transitions[f"{frm or 'EMPTY'}→{to or 'EMPTY'}"] += n
            causes[cause] += n
        res.transitions = dict(transitions.most_common())
        res.by_cause = dict(causes.most_common())
        res.reverts = causes.get("revert", 0)
        res.losses = sum(n for frm, to, cause, n in lines if to == "LOST")
        runs = session.scalars(select(JobRun).where(JobRun.portal_id == pid, JobRun.kind == "daily")).all()
        res.transfers = sum(int((r.summary or {}).get("transfers", 0)) for r in runs)
        res.digests_sent = session.scalar(select(func.count()).select_from(NotificationLog).where(
            NotificationLog.portal_id == pid, NotificationLog.status == "sent",
            NotificationLog.kind == "digest")) or 0
        res.messages_sent = session.scalar(select(func.count()).select_from(NotificationLog).where(
            NotificationLog.portal_id == pid, NotificationLog.status == "sent")) or 0
        res.tracked_at_end = session.scalar(select(func.count()).select_from(TrackedEntity).where(
            TrackedEntity.portal_id == pid, TrackedEntity.status.is_not(None))) or 0
        res.events_stored = session.scalar(select(func.count()).select_from(StoredEvent).where(
            StoredEvent.portal_id == pid)) or 0
        res.events_processed = session.scalar(select(func.count()).select_from(StoredEvent).where(
            StoredEvent.portal_id == pid, StoredEvent.processed_at.is_not(None))) or 0
    res.status_mix = demo.status_mix()
    res.status_mix_at_start = dict(demo.mix_at_start)
    res.status_mix_by_day = list(demo.mix_by_day)
    calls = list(dp.calls)
    outer = [c for c in calls if not c.get("in_batch")]
    res.rest_http_requests = len(outer)
    res.rest_commands = sum(1 for c in calls if c.get("in_batch")) + sum(1 for c in outer if c["method"] != "batch")
    res.rest_by_method = dict(Counter(c["method"] for c in outer).most_common())
    res.notifications_in_portal = len(dp.notifications)
    res.timeline_comments = len(dp.timeline_comments)
    res.feed_posts = len(dp.blog_posts)
    res.actions = dict(demo.actions)
    res.seconds = time.monotonic() - demo.started
    return res


def summary_text(res: DemoResult, status_names: dict[str, str] | None = None) -> str:
    # Names only, never codes mixed with names: a client without a status reads as such.
    names = {"EMPTY": "(без статуса)", **(status_names or {})}

    def name(code: str) -> str:
        return names.get(code, code)

    out = [f"Nezabyt demo: {res.first_day.isoformat()} .. {res.last_day.isoformat()} "
           f"({(res.last_day - res.first_day).days} days) in {res.seconds:.0f} s",
           f"  clients tracked: {res.tracked_at_start} at the start, {res.tracked_at_end} at the end",
           "  what the managers did: " + ", ".join(f"{k} {v}" for k, v in sorted(res.actions.items())),
           f"  events: {res.events_stored} stored, {res.events_processed} processed",
           "  transitions by cause: " + ", ".join(f"{k} {v}" for k, v in res.by_cause.items()),
           "  transitions by status:"]
    for key, n in res.transitions.items():
        frm, to = key.split("→")
        out.append(f"    {name(frm):>10} → {name(to):<10} {n}")
    out += [f"  reverts (changed without a call): {res.reverts}",
            f"  losses: {res.losses}; transferred to the supervisor: {res.transfers}",
            f"  digests sent: {res.digests_sent} ({res.messages_sent} messages in all, "
            f"{res.notifications_in_portal} notifications in the portal); {res.timeline_comments} timeline comments, "
            f"{res.feed_posts} live-feed posts",
            f"  REST calls spent: {res.rest_http_requests} HTTP requests carrying {res.rest_commands} commands "
            "(" + ", ".join(f"{m} {n}" for m, n in list(res.rest_by_method.items())[:6]) + ")",
            "  statuses now: " + ", ".join(f"{name(k)} {v}" for k, v in sorted(res.status_mix.items()))]
    return "\n".join(out)
