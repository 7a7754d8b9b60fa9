"""The event job: a portal's stored events, in order and in batches of BATCH_SIZE, each batch read
from the portal once (addon.event_reads) and applied by the status rules (addon.event_apply), then
the planned writes and messages sent (addon.engine). The caller holds the portal's lease."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field, replace

from sqlalchemy import select

from addon import engine, notifications
from addon.bitrix.client import portal_client
from addon.event_apply import apply_batch
from addon.event_reads import load_rows, read_batch
from addon.models import StoredEvent

MAX_ATTEMPTS = 8
BATCH_SIZE = 1000
log = logging.getLogger(__name__)


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


def _pending(portal_id: int):
    return (StoredEvent.portal_id == portal_id, StoredEvent.processed_at.is_(None), StoredEvent.source != "robot",
            StoredEvent.attempts < MAX_ATTEMPTS)


def pending_events(session, portal_id: int, limit: int) -> list[StoredEvent]:
    return list(session.scalars(select(StoredEvent).where(*_pending(portal_id)).order_by(StoredEvent.id).limit(limit)))


def has_pending(services, portal_id: int) -> bool:
    """One cheap query (an id, no ORM rows): asked before every event pass and between chunks."""
    with services.engine.connect() as conn:
        return conn.execute(select(StoredEvent.id).where(*_pending(portal_id)).limit(1)).first() is not None


def process_events(services, portal_id: int, now: dt.datetime, *, client=None, limit: int = BATCH_SIZE,
                   keep=None) -> EventsReport:
    """Process up to `limit` pending events of one portal; repeat until none is left.
    The caller holds the portal's lease; `keep()` renews it between batches."""
    own = client is None
    client = client or portal_client(services, portal_id)
    report = EventsReport(portal_id)
    before, started = client.stats.http_requests, time.monotonic()
    try:
        # Writes planned by an earlier pass that died before sending: send them first, so their
        # echoes and our reads see the portal as the service table does.
        notifications.flush(services, client, portal_id)
        while True:
            done = _process_batch(services, client, portal_id, now, limit, report)
            if keep is not None:
                keep()
            if done < limit:
                break
        w, m = notifications.flush(services, client, portal_id)
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
    with services.sessions() as session:
        ctx = engine.load_context(session, portal_id)
        events = pending_events(session, portal_id, limit)
        if not events:
            return 0
        report.events += len(events)
        batch = read_batch(session, client, ctx, events, now)
        # All clients in one go; if one of them breaks, again one client at a time in savepoints,
        # so the failure stays with that client's events.
        event_ids = [ev.id for ev in events]
        try:
            applied = apply_batch(session, ctx, batch, events, now, safe=False)
        except Exception:  # noqa: BLE001
            session.rollback()
            events = list(session.scalars(select(StoredEvent).where(StoredEvent.id.in_(event_ids))))
            batch = replace(batch, rows=load_rows(session, portal_id, batch.touches))
            applied = apply_batch(session, ctx, batch, events, now, safe=True)
        report.steps += applied.steps
        report.reverts += applied.reverts
        report.failed += applied.failed
        report.processed += applied.processed
        return len(events)
