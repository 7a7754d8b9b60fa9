"""Applying the pure status rules to storage: the portal's context (options, time zone, field
items), the service-table row <-> rules.Entity mapping and its history lines. Planned portal writes
live in addon.outbox, messages in addon.notifications.

Helpers here never commit: the job at the edge owns the session.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from addon import rules
from addon.models import Portal, PortalSettings, StatusHistory, TrackedEntity, utcnow
from addon.options import Options, parse_time_zone
from addon.rules.ladder import reason_code

STATUS_FIELD = "UF_CRM_NEZABYT_STATUS"
REASON_FIELD = "UF_CRM_NEZABYT_REASON"


@dataclass
class PortalContext:
    """What a job needs to know about one portal, read once at its start."""

    portal_id: int
    opts: Options
    tz: dt.tzinfo
    field_items: dict[str, Any] = field(default_factory=dict)
    settings_version: int = 1
    dated_version: int | None = None  # see PortalSettings.dated_version
    language: str = "ru"

    # --- time -----------------------------------------------------------------------------
    def local(self, moment: dt.datetime) -> dt.datetime:
        """An instant in the portal's time zone (naive instants are taken as UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.astimezone(self.tz)

    def today(self, now: dt.datetime) -> dt.date:
        return self.local(now).date()

    def day_of(self, value: Any) -> dt.date | None:
        """The portal-time-zone day of a Bitrix24 date-time ("2026-11-22T12:00:00+03:00")."""
        moment = parse_portal_time(value, self.tz)
        return moment.astimezone(self.tz).date() if moment is not None else None

    # --- the enumeration fields -----------------------------------------------------------
    def item_id(self, entity_type: str, code: str | None) -> str:
        """The list item ID to write for a status code ("" clears the field)."""
        if code is None:
            return ""
        items = self.field_items.get(entity_type) or {}
        if code not in items:
            raise KeyError(f"no list item for status {code} on {entity_type}; sync the status field")
        return str(items[code])

    def code_of(self, entity_type: str, value: Any) -> str | None:
        """The status code a portal field value (a list item ID) stands for; an item we do not
        know comes back as "?<id>" so the rules see an unknown status and revert it."""
        value = first_value(value)
        if value in (None, "", False, "0", 0):
            return None
        value = str(value)
        for code, item in (self.field_items.get(entity_type) or {}).items():
            if str(item) == value:
                return code
        return f"?{value}"

    def reason_of(self, entity_type: str, value: Any) -> str | None:
        """The reason text a reason-field value (a list item ID) stands for. The list items are
        keyed by the reason's code (rules.ladder.reason_code), so map back through the options."""
        value = first_value(value)
        if value in (None, "", False, "0", 0):
            return None
        texts = {reason_code(r): r for s in self.opts.statuses for r in s.reasons}
        items = self.field_items.get(f"reason_{entity_type}") or {}
        for key, item in items.items():
            if str(item) == str(value):
                return texts.get(key, key)
        return str(value)


def first_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def parse_portal_time(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    if value in (None, "", False):
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def load_context(session: Session, portal_id: int) -> PortalContext:
    portal = session.get(Portal, portal_id)
    if portal is None:
        raise LookupError(f"no portal {portal_id}")
    row = session.get(PortalSettings, portal_id)
    data = dict(row.data or {}) if row is not None else {}
    # The portal's own zone (set on install) unless the admin chose one in the settings.
    if not data.get("time_zone") and portal.time_zone:
        data["time_zone"] = portal.time_zone
    opts = Options.from_dict(data)
    tz = parse_time_zone(opts.time_zone) or dt.timezone.utc
    return PortalContext(portal_id=portal_id, opts=opts, tz=tz,
                         field_items=dict(row.field_items or {}) if row is not None else {},
                         settings_version=row.version if row is not None else 1,
                         dated_version=row.dated_version if row is not None else None,
                         language=opts.language)


def find_portal(session: Session, member_or_domain: str) -> Portal | None:
    """`--portal` takes a member_id or a domain (or the numeric row id)."""
    text = str(member_or_domain).strip()
    portal = session.scalar(select(Portal).where(Portal.member_id == text))
    if portal is None:
        portal = session.scalar(select(Portal).where(Portal.domain == text).order_by(Portal.id.desc()))
    if portal is None and text.isdigit():
        portal = session.get(Portal, int(text))
    return portal


# --- the service table ----------------------------------------------------------------------------

def entity_of(row: TrackedEntity | None) -> rules.Entity:
    if row is None:
        return rules.Entity(status=None, status_set_on=None)
    return rules.entity_of(row)


def store(row: TrackedEntity, e: rules.Entity, opts: Options) -> None:
    """Copy the rules' view back to the row and re-date it (due/warn feed the range scans)."""
    for name, value in rules.row_values(opts, e).items():
        setattr(row, name, value)


# The causes a person is behind (a manager's edit, an admin's load or undo): their history lines name them.
BY_USER_CAUSES = ("manager", "import", "undo")


def history_values(row: TrackedEntity, steps: Iterable[rules.Step], *, by_user_id: int | None = None,
                   note: str | None = None) -> list[dict[str, Any]]:
    """The StatusHistory rows of the row's steps, as values (for one INSERT of a whole chunk)."""
    return [{"portal_id": row.portal_id, "entity_type": row.entity_type, "entity_id": row.entity_id,
             "from_status": step.from_status, "to_status": step.to_status, "changed_on": step.on,
             "cause": step.cause, "by_user_id": by_user_id if step.cause in BY_USER_CAUSES else None,
             "assigned_by_id": row.assigned_by_id, "note": note, "recorded_at": utcnow()}
            for step in steps]


def add_history(session: Session, row: TrackedEntity, steps: Iterable[rules.Step], *,
                by_user_id: int | None = None, note: str | None = None) -> list[StatusHistory]:
    lines = [StatusHistory(**values) for values in history_values(row, steps, by_user_id=by_user_id, note=note)]
    session.add_all(lines)
    return lines


def tracked_row(session: Session, portal_id: int, entity_type: str, entity_id: int) -> TrackedEntity | None:
    return session.scalar(select(TrackedEntity).where(TrackedEntity.portal_id == portal_id,
                                                      TrackedEntity.entity_type == entity_type,
                                                      TrackedEntity.entity_id == entity_id))


def entity_title(entity_type: str, fields: dict) -> str:
    if entity_type == "company":
        return str(fields.get("TITLE") or f"#{fields.get('ID')}")[:255]
    name = " ".join(str(fields.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    return (name or str(fields.get("TITLE") or f"#{fields.get('ID')}"))[:255]


def int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "", False) else None
    except (TypeError, ValueError):
        return None
