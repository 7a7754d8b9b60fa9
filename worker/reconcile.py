"""Reconcile: Bitrix24 never retries an event, so this job lists what changed on the portal since
its watermark (contacts/companies by DATE_MODIFY, call activities by LAST_UPDATED, minus a safety
margin) and stores an event for every change not already stored, online or by an earlier pass."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select

from addon.db import unit_of_work
from addon.models import Portal, PortalSettings, StoredEvent, naive_utc
from addon.options import Options
from addon.bitrix.client import PortalClient, portal_client

SAFETY_MARGIN = dt.timedelta(minutes=10)
# On a first pass with no install time known, look back this far.
FIRST_PASS_WINDOW = dt.timedelta(days=1)
CALL_TYPE_ID = 2
ENTITY_EVENTS = {"contact": "ONCRMCONTACT", "company": "ONCRMCOMPANY", "activity": "ONCRMACTIVITY"}


@dataclass
class ReconcileReport:
    portal_id: int
    seen: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    already_known: int = 0
    entity_watermark: dt.datetime | None = None
    activity_watermark: dt.datetime | None = None

    @property
    def stored_total(self) -> int:
        return sum(self.stored.values())


@dataclass(frozen=True)
class Change:
    """One change the portal reports: entity, ID, when it was modified (UTC) and whether new."""

    entity_type: str
    entity_id: int
    modified: dt.datetime
    created: bool
    stamp: str  # the portal's own text of the modification time, part of the dedupe key


def reconcile_portal(services, portal_id: int, now: dt.datetime, *, margin: dt.timedelta = SAFETY_MARGIN,
                     client: PortalClient | None = None) -> ReconcileReport:
    now = naive_utc(now)
    report = ReconcileReport(portal_id)
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        row = session.get(PortalSettings, portal_id)
        options = Options.from_dict(row.data if row else None)
        start = portal.installed_at or (now - FIRST_PASS_WINDOW)
        entity_since = (portal.entity_watermark or start) - margin
        activity_since = (portal.activity_watermark or start) - margin
        entity_mark, activity_mark = portal.entity_watermark, portal.activity_watermark
    own = client is None
    client = client or portal_client(services, portal_id)
    try:
        changes: list[Change] = []
        for entity_type in options.entity_types:
            rows = client.list_all(f"crm.{entity_type}.list", filter={">DATE_MODIFY": _iso(entity_since)},
                                   select=["ID", "DATE_CREATE", "DATE_MODIFY"])
            found = [_change(entity_type, r["ID"], r.get("DATE_MODIFY"), r.get("DATE_CREATE")) for r in rows]
            found = [c for c in found if c is not None]
            report.seen[entity_type] = len(found)
            changes.extend(found)
        rows = client.list_all("crm.activity.list", filter={">LAST_UPDATED": _iso(activity_since),
                                                            "TYPE_ID": CALL_TYPE_ID},
                               select=["ID", "CREATED", "LAST_UPDATED", "OWNER_TYPE_ID", "OWNER_ID"])
        calls = [_change("activity", r["ID"], r.get("LAST_UPDATED"), r.get("CREATED")) for r in rows]
        calls = [c for c in calls if c is not None]
        report.seen["activity"] = len(calls)
        changes.extend(calls)
    finally:
        if own:
            client.close()

    with unit_of_work(services.sessions) as session:
        for entity_type in {c.entity_type for c in changes}:
            mine = [c for c in changes if c.entity_type == entity_type]
            known = _known_stamps(session, portal_id, entity_type, {c.entity_id for c in mine})
            for change in mine:
                key = f"reconcile:{entity_type}:{change.entity_id}:{change.stamp}"
                if key in known["keys"] or known["ts"].get(change.entity_id, -1) >= _unix(change.modified):
                    report.already_known += 1
                    continue
                event_name = ENTITY_EVENTS[entity_type] + ("ADD" if change.created else "UPDATE")
                session.add(StoredEvent(
                    portal_id=portal_id, event_name=event_name, entity_type=entity_type,
                    entity_id=change.entity_id, source="reconcile", dedupe_key=key,
                    payload={"event": event_name, "data": {"FIELDS": {"ID": str(change.entity_id)}},
                             "ts": str(_unix(change.modified)), "modified": change.stamp}))
                known["keys"].add(key)
                report.stored[entity_type] = report.stored.get(entity_type, 0) + 1
        portal = session.get(Portal, portal_id, with_for_update=True)
        entity_times = [c.modified for c in changes if c.entity_type != "activity"]
        activity_times = [c.modified for c in changes if c.entity_type == "activity"]
        # Watermarks only move forward, to the newest change the portal reported (its clock).
        portal.entity_watermark = max([t for t in (entity_mark, *entity_times) if t] or [entity_since + margin])
        portal.activity_watermark = max([t for t in (activity_mark, *activity_times) if t]
                                        or [activity_since + margin])
        report.entity_watermark, report.activity_watermark = portal.entity_watermark, portal.activity_watermark
    return report


def _known_stamps(session, portal_id: int, entity_type: str, ids: set[int]) -> dict:
    """Dedupe keys already stored for these entities, and the newest event time (`ts`) of any
    stored event per entity: an online event sent at or after a modification already covers it."""
    keys: set[str] = set()
    newest: dict[int, int] = {}
    id_list = sorted(ids)
    for start in range(0, len(id_list), 500):
        chunk = id_list[start:start + 500]
        rows = session.execute(select(StoredEvent.entity_id, StoredEvent.dedupe_key, StoredEvent.payload).where(
            StoredEvent.portal_id == portal_id, StoredEvent.entity_type == entity_type,
            StoredEvent.entity_id.in_(chunk)))
        for entity_id, key, payload in rows:
            keys.add(key)
            try:
                ts = int((payload or {}).get("ts"))
            except (TypeError, ValueError):
                continue
            if ts > newest.get(entity_id, -1):
                newest[entity_id] = ts
    return {"keys": keys, "ts": newest}


def _change(entity_type: str, raw_id, modified: str | None, created: str | None) -> Change | None:
    when = _parse(modified)
    if when is None:
        return None
    return Change(entity_type, int(raw_id), when, created is not None and _parse(created) == when, str(modified))


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return naive_utc(moment)



def _iso(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=dt.timezone.utc, microsecond=0).isoformat()


def _unix(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.timezone.utc).timestamp())
