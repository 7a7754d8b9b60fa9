"""What a batch of stored events says about a portal's clients, read from the portal once per batch:
the events sorted into one Touch per contact or company, the calls with every item they are bound
to, the deals, the clients' current fields and their open deals.

Reads are planned per batch, not per event: every entity, activity and deal named by the batch is
read once with batched `get`s (50 per HTTP call), and the open deals of every touched client are
counted with one ID-windowed list, so a burst of 1,000 events costs about 20 calls.
"""
from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from addon import engine
from addon.bitrix.errors import PortalError
from addon.engine import PortalContext
from addon.models import StoredEvent, TrackedEntity

EVENT_RE = re.compile(r"^ONCRM(CONTACT|COMPANY|DEAL|ACTIVITY)(ADD|UPDATE|DELETE)$")
OWNER_TYPES = {"3": "contact", "4": "company"}


@dataclass
class Touch:
    """Everything one batch says about one contact or company."""

    event_ids: list[int] = field(default_factory=list)
    snapshot: bool = False  # an ADD/UPDATE asks us to read its fields
    added: bool = False
    deleted: bool = False
    calls: list[dt.date] = field(default_factory=list)
    deals: list[tuple[dt.date, int, str | None]] = field(default_factory=list)  # (day, deal id, outcome)


@dataclass
class BatchReading:
    """A batch's events, read: one Touch per client with its tracked row (if any), its fields (or
    the error reading them) and its open deals; the events done with already, and the failed ones
    with why."""

    touches: dict[tuple[str, int], Touch]
    rows: dict[tuple[str, int], TrackedEntity]
    snapshots: dict[tuple[str, int], Any]
    open_counts: dict[tuple[str, int], int]
    failed: dict[int, str]
    done_ids: set[int]


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


def read_batch(session, client, ctx: PortalContext, events: list[StoredEvent], now: dt.datetime) -> BatchReading:
    """Sort the batch's events into touches per client and read from the portal what they name."""
    opts = ctx.opts
    touches, activity_events, deal_events, done_ids = _sort_events(events, opts.entity_types)
    failed: dict[int, str] = {}

    # Activities and deals first: they name more clients to touch.
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
                if is_gone(error):
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
                if is_gone(deal):
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
    rows = load_rows(session, ctx.portal_id, touches)
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
    return BatchReading(touches, rows, snapshots, open_counts, failed, done_ids)


def _sort_events(events: list[StoredEvent], entity_types) -> tuple[dict[tuple[str, int], Touch], dict[int, list[int]],
                                                                  dict[int, list[int]], set[int]]:
    """(touches per contact/company, event ids per activity, event ids per deal, events with nothing
    to do) of a batch."""
    touches: dict[tuple[str, int], Touch] = defaultdict(Touch)
    activity_events: dict[int, list[int]] = defaultdict(list)
    deal_events: dict[int, list[int]] = defaultdict(list)
    done_ids: set[int] = set()
    for ev in events:
        kind, action, oid = parse_event(ev)
        if kind is None or oid is None:
            done_ids.add(ev.id)  # not ours to act on (install, uninstall, leads ...)
        elif kind in ("contact", "company"):
            if kind not in entity_types:
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
    return touches, activity_events, deal_events, done_ids


def is_gone(error) -> bool:
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


def load_rows(session, portal_id: int, touches) -> dict[tuple[str, int], TrackedEntity]:
    rows: dict[tuple[str, int], TrackedEntity] = {}
    for kind in ("contact", "company"):
        ids = [i for (k, i) in touches if k == kind]
        for start in range(0, len(ids), 500):
            for row in session.scalars(select(TrackedEntity).where(
                    TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == kind,
                    TrackedEntity.entity_id.in_(ids[start:start + 500]))):
                rows[(kind, row.entity_id)] = row
    return rows
