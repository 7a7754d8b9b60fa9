"""Database rows for tests, one small function per model.

Each adds one row with the defaults most tests want, flushes it (so its id is set) and returns it;
keyword arguments set any other column. They never commit: the test owns the session. Defaults that
must be unique (a portal's member_id, an event's dedupe key) are numbered, so a test can make
several rows without naming them."""
from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from sqlalchemy.orm import Session

from addon.models import (JobRun, JournalChange, PortalSettings, Portal, StatusHistory, StoredEvent,
                          TrackedEntity)
from addon.options import Options

_numbers = itertools.count(1)


def _added(session: Session, row):
    session.add(row)
    session.flush()
    return row


def make_portal(session: Session, **columns: Any) -> Portal:
    """A portal as installed: its endpoints, no tokens (see tests.install.conftest for those)."""
    n = next(_numbers)
    values: dict[str, Any] = dict(member_id=f"m-test-{n}", domain=f"portal{n}.bitrix24.test",
                                  client_endpoint=f"https://portal{n}.bitrix24.test/rest/",
                                  server_endpoint="https://oauth.bitrix.info/rest/")
    return _added(session, Portal(**(values | columns)))


def make_settings(session: Session, portal_id: int, options: Options | None = None,
                  **columns: Any) -> PortalSettings:
    """The portal's settings row: `options` (the defaults unless given) and no status items."""
    values: dict[str, Any] = dict(data=(options or Options()).to_dict(), field_items={})
    return _added(session, PortalSettings(portal_id=portal_id, **(values | columns)))


def make_tracked(session: Session, portal_id: int, entity_id: int, status: str | None = "NEW",
                 **columns: Any) -> TrackedEntity:
    """A tracked contact (`entity_type="company"` for a company) with `status` and nothing else."""
    values: dict[str, Any] = dict(entity_type="contact", status=status)
    return _added(session, TrackedEntity(portal_id=portal_id, entity_id=entity_id, **(values | columns)))


def make_history(session: Session, portal_id: int, entity_id: int, from_status: str | None, to_status: str | None,
                 changed_on: dt.date, **columns: Any) -> StatusHistory:
    """One status change of a contact, by the daily decay unless `cause` says otherwise."""
    values: dict[str, Any] = dict(entity_type="contact", cause="decay")
    return _added(session, StatusHistory(portal_id=portal_id, entity_id=entity_id, from_status=from_status,
                                         to_status=to_status, changed_on=changed_on, **(values | columns)))


def make_event(session: Session, portal_id: int, **columns: Any) -> StoredEvent:
    """A stored contact update event, not processed yet."""
    values: dict[str, Any] = dict(event_name="ONCRMCONTACTUPDATE", entity_type="contact", payload={},
                                  dedupe_key=f"test:{next(_numbers)}")
    return _added(session, StoredEvent(portal_id=portal_id, **(values | columns)))


def make_robot_call(session: Session, portal_id: int, code: str, document_id: str, event_token: str,
                    properties: dict[str, Any] | None = None, **columns: Any) -> StoredEvent:
    """A robot's call as the intake stores it, for `document_id` like LEAD_7."""
    entity, _, number = document_id.partition("_")
    payload = {"code": code, "event_token": event_token,
               "document_id": ["crm", f"CCrmDocument{entity.capitalize()}", document_id]}
    if properties is not None:
        payload["properties"] = properties
    values: dict[str, Any] = dict(event_name=f"ROBOT:{code}", source="robot", payload=payload,
                                  entity_type=entity.lower(), entity_id=int(number))
    return make_event(session, portal_id, **(values | columns))


def make_job_run(session: Session, portal_id: int, kind: str = "daily", day: dt.date | None = None,
                 **columns: Any) -> JobRun:
    """A queued job; a daily run given its `day` carries the key and params the worker gives it."""
    values: dict[str, Any] = dict(kind=kind)
    if day is not None:
        values |= dict(key=f"{kind}:{portal_id}:{day}", params={"day": day.isoformat()})
    return _added(session, JobRun(portal_id=portal_id, **(values | columns)))


def make_change(session: Session, job_run_id: int, portal_id: int, entity_id: int, old_status: str | None,
                new_status: str | None, **columns: Any) -> JournalChange:
    """One change a run made to a contact, as its journal keeps it."""
    values: dict[str, Any] = dict(entity_type="contact")
    return _added(session, JournalChange(portal_id=portal_id, job_run_id=job_run_id, entity_id=entity_id,
                                         old_status=old_status, new_status=new_status, **(values | columns)))
