"""Worker test harness: a devportal and the app server with Nezabyt installed, the portal's clock
frozen on a simulated day, and small helpers to act as managers and to run the worker's jobs."""
from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from addon.engine import STATUS_FIELD
from addon.models import Portal, PortalSettings, TrackedEntity
from addon.options import Options

MSK = ZoneInfo("Europe/Moscow")
DAY0 = dt.date(2026, 3, 2)  # a Monday


def at(day: dt.date, hour: int = 9, minute: int = 0) -> dt.datetime:
    """An instant on a portal day (Moscow time), as an aware datetime."""
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=MSK)


class Harness:
    """One installed portal: `srv` (DevPortalServer), `dp` (its DevPortal), `services`, `portal_id`."""

    def __init__(self, services, srv, app):
        self.services, self.srv, self.dp, self.app = services, srv, srv.portal, app
        self.portal_id: int | None = None

    # --- setup ---------------------------------------------------------------------------
    def install(self, **option_overrides) -> "Harness":
        s = self.services.settings
        answer = self.dp.install_app(self.app.url, s.client_id, s.client_secret)
        assert answer["status_code"] == 200, answer["answer"]
        self.dp.wait_for_deliveries(10)
        with self.services.sessions() as session:
            portal = session.scalars(select(Portal).where(Portal.member_id == answer["member_id"])).one()
            self.portal_id = portal.id
        if option_overrides:
            self.set_options(**option_overrides)
        return self

    def set_options(self, **overrides) -> Options:
        with self.services.sessions() as session:
            row = session.get(PortalSettings, self.portal_id)
            opts = dataclasses.replace(Options.from_dict(row.data), **overrides)
            row.data = opts.to_dict()
            row.version += 1
            session.commit()
        return opts

    def options(self) -> Options:
        from addon.engine import load_context

        with self.services.sessions() as session:
            return load_context(session, self.portal_id).opts

    def items(self, kind: str = "contact") -> dict[str, str]:
        with self.services.sessions() as session:
            return dict(session.get(PortalSettings, self.portal_id).field_items[kind])

    # --- the portal ----------------------------------------------------------------------
    def clock(self, moment: dt.datetime) -> None:
        # Events reach the app within moments of a change: deliver what is queued before time moves.
        assert self.dp.wait_for_deliveries(30)
        self.dp.set_clock(moment, frozen=True)

    def portal_status(self, kind: str, eid: int) -> str | None:
        value = self.dp.records[kind][eid].get(STATUS_FIELD)
        if not value:
            return None
        cache = self.__dict__.setdefault("_codes", {})
        if str(value) not in cache.get(kind, {}):  # the list may have been re-synced: read it again
            cache[kind] = {v: k for k, v in self.items(kind).items()}
        return cache[kind].get(str(value), f"?{value}")

    def put_status(self, kind: str, eid: int, code: str | None, when: dt.datetime) -> None:
        """Set a status in the portal's data directly (as an import before install would), no event."""
        record = self.dp.records[kind][eid]
        record[STATUS_FIELD] = self.items(kind)[code] if code else None
        record["DATE_MODIFY"] = self.dp.iso(when)

    def manager_sets(self, kind: str, eid: int, code: str | None, user_id: int | None = None,
                     reason_item: str | None = None) -> None:
        """A manager edits the card (fires ONCRM...UPDATE like the real portal)."""
        fields = {STATUS_FIELD: self.items(kind)[code] if code else ""}
        if reason_item is not None:
            fields["UF_CRM_NEZABYT_REASON"] = reason_item
        user = user_id or int(self.dp.records[kind][eid]["ASSIGNED_BY_ID"])
        self.dp.act_update(kind, eid, fields, user_id=user)

    # --- the worker ----------------------------------------------------------------------
    def drain(self, now: dt.datetime):
        from worker.events import process_events

        assert self.dp.wait_for_deliveries(30)
        return process_events(self.services, self.portal_id, now)

    def daily(self, now: dt.datetime):
        from worker.daily import run_daily

        return run_daily(self.services, self.portal_id, now)

    def reindex(self, now: dt.datetime):
        from worker.reindex import reindex

        return reindex(self.services, self.portal_id, now)

    def row(self, kind: str, eid: int) -> TrackedEntity | None:
        with self.services.sessions() as session:
            return session.scalars(select(TrackedEntity).where(
                TrackedEntity.portal_id == self.portal_id, TrackedEntity.entity_type == kind,
                TrackedEntity.entity_id == eid)).one_or_none()

    def calls(self, method: str | None = None, in_batch: bool | None = None) -> list[dict]:
        out = []
        for c in list(self.dp.calls):
            if method is not None and c["method"] != method:
                continue
            if in_batch is not None and bool(c.get("in_batch")) != in_batch:
                continue
            out.append(c)
        return out


@pytest.fixture
def fast_services(services):
    """The test services with the add-on's own pace opened up (the devportal's limits are off)."""
    services.settings = dataclasses.replace(services.settings, portal_rps=10000.0, portal_burst=10000)
    return services


@pytest.fixture
def portal_factory(fast_services):
    """Make devportals (each one Bitrix24 portal) served next to ONE app server; all stopped after."""
    import logging

    from devportal.server import DevPortalServer
    from tests.support import AppServer

    # Thousands of event POSTs: the per-request log line would cost more than the request.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = AppServer(fast_services).start()
    servers = []

    def make(limits: bool = False, day: dt.date = DAY0) -> Harness:
        srv = DevPortalServer(limits=limits, tz="Europe/Moscow")
        srv.start()
        srv.portal.set_clock(at(day, 8), frozen=True)
        servers.append(srv)
        return Harness(fast_services, srv, app)

    yield make
    app.stop()
    for srv in servers:
        srv.stop()


@pytest.fixture
def harness(portal_factory):
    return portal_factory()
