"""The shared test factories: their defaults are rows the schema accepts (on SQLite and on
PostgreSQL, whichever the suite runs on), and rows made without naming them do not collide."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from addon.models import JobRun, JournalChange, Portal, PortalSettings, StatusHistory, StoredEvent, TrackedEntity
from tests import factories


def test_every_factory_makes_a_valid_row_from_its_defaults(services):
    with services.sessions.begin() as s:
        portal = factories.make_portal(s)
        factories.make_settings(s, portal.id)
        factories.make_tracked(s, portal.id, 1)
        factories.make_history(s, portal.id, 1, None, "NEW", dt.date(2026, 3, 2))
        factories.make_event(s, portal.id)
        factories.make_robot_call(s, portal.id, "nezabyt_distribute_lead", "LEAD_7", "tok")
        run = factories.make_job_run(s, portal.id, day=dt.date(2026, 3, 2))
        factories.make_change(s, run.id, portal.id, 1, None, "NEW")
    with services.sessions() as s:
        assert {m.__name__: s.scalar(select(func.count()).select_from(m))
                for m in (Portal, PortalSettings, TrackedEntity, StatusHistory, StoredEvent, JobRun, JournalChange)} \
            == {"Portal": 1, "PortalSettings": 1, "TrackedEntity": 1, "StatusHistory": 1, "StoredEvent": 2,
                "JobRun": 1, "JournalChange": 1}
        assert s.scalars(select(JobRun)).one().key == f"daily:{portal.id}:2026-03-02"


def test_rows_made_without_names_are_unique(services):
    with services.sessions.begin() as s:
        first, second = factories.make_portal(s), factories.make_portal(s)
        factories.make_event(s, first.id)
        factories.make_event(s, first.id)
    assert first.member_id != second.member_id and first.domain != second.domain
