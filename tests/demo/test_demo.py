"""A reduced `nezabyt demo` end to end: its summary's figures are non-zero and agree with the
database and with the devportal's own records (call log, notifications, client fields)."""
from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections import Counter

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from addon.engine import STATUS_FIELD
from addon.models import NotificationLog, Outbox, PortalSettings, StatusHistory, StoredEvent, TrackedEntity
from demo.cli import demo_command
from demo.config import DemoConfig
from demo.month import run_demo
from demo.report import summary_text

LAST_DAY = dt.date(2026, 3, 31)

pytestmark = pytest.mark.slow


@pytest.fixture
def small_demo(services):
    """The demo on the test database: 600 contacts, 120 companies, 12 days."""
    lines: list[str] = []
    config = DemoConfig(contacts=600, companies=120, days=12, seed=3, database_url=services.settings.database_url,
                        last_day=LAST_DAY, calls_per_manager=6, changes_per_day=10, deals_per_day=4,
                        new_clients_per_day=3)
    demo, result = run_demo(config, lines.append)
    yield demo, result, lines
    demo.close()


def test_demo_summary_is_non_zero_and_agrees_with_the_database(small_demo, services):
    demo, res, lines = small_demo
    pid = res.portal_id
    assert res.first_day == LAST_DAY - dt.timedelta(days=12) and res.last_day == LAST_DAY
    # progress while it runs: setup lines, then one line per simulated day
    assert sum(1 for ln in lines if " day " in ln and "/12:" in ln) == 12
    assert res.tracked_at_start > 500 and res.tracked_at_end > 0
    for figure in ("reverts", "losses", "transfers", "digests_sent", "messages_sent", "rest_http_requests",
                   "events_stored"):
        assert getattr(res, figure) > 0, figure
    assert res.by_cause["decay"] > 0 and res.by_cause["manager"] > 0 and res.by_cause["deal"] > 0
    assert res.by_cause["new"] == res.actions["new clients"]

    with services.sessions() as session:
        causes = Counter(dict(session.execute(select(StatusHistory.cause, func.count()).where(
            StatusHistory.portal_id == pid, StatusHistory.changed_on > res.first_day)
            .group_by(StatusHistory.cause)).all()))
        assert dict(causes) == res.by_cause
        assert sum(res.transitions.values()) == sum(causes.values())
        assert res.losses == session.scalar(select(func.count()).select_from(StatusHistory).where(
            StatusHistory.portal_id == pid, StatusHistory.changed_on > res.first_day,
            StatusHistory.to_status == "LOST"))
        sent = session.scalars(select(NotificationLog).where(NotificationLog.portal_id == pid)).all()
        assert all(n.status == "sent" for n in sent)
        assert res.messages_sent == len(sent)
        assert res.digests_sent == sum(1 for n in sent if n.kind == "digest")
        # every planned portal write went out, and every stored event was processed
        assert session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.portal_id == pid, Outbox.status != "sent")) == 0
        assert res.events_processed == res.events_stored == session.scalar(
            select(func.count()).select_from(StoredEvent).where(StoredEvent.portal_id == pid))
        rows = session.scalars(select(TrackedEntity).where(TrackedEntity.portal_id == pid,
                                                           TrackedEntity.status.is_not(None))).all()
        items = session.get(PortalSettings, pid).field_items

    assert sum(res.status_mix.values()) == res.tracked_at_end == len(rows)
    assert res.status_mix == dict(Counter(r.status for r in rows))
    assert len(res.status_mix_by_day) == 12
    assert sum(res.status_mix_at_start.values()) == res.tracked_at_start
    # The portal shows what the service table says, client by client.
    dp = demo.srv.portal
    for row in rows:
        shown = str(dp.records[row.entity_type][row.entity_id].get(STATUS_FIELD) or "")
        assert shown == str(items[row.entity_type][row.status]), (row.entity_type, row.entity_id, row.status)
    # Losses were handed to a department head (transfer to the supervisor is on).
    heads = {int(d["UF_HEAD"]) for d in dp.departments.values() if d.get("UF_HEAD")}
    lost_owners = {r.assigned_by_id for r in rows if r.status == "LOST"}
    assert lost_owners & heads
    # The REST figures are the devportal's own call log.
    outer = [c for c in dp.calls if not c.get("in_batch")]
    assert res.rest_http_requests == len(outer)
    assert res.rest_by_method == dict(Counter(c["method"] for c in outer))
    assert res.notifications_in_portal == len(dp.notifications)
    assert res.feed_posts == len(dp.blog_posts) > 0 and res.timeline_comments == len(dp.timeline_comments) > 0
    # every message logged as sent reached the portal: a notification, or a live-feed post
    assert res.messages_sent == res.notifications_in_portal + res.feed_posts

    # After the summary the demo keeps serving: the worker goes on processing on the portal's clock.
    stop = threading.Event()
    serving = threading.Thread(target=demo.serve, kwargs={"speed": 100.0, "stop": stop}, daemon=True)
    serving.start()
    try:
        uid = int(dp.records["contact"][1]["ASSIGNED_BY_ID"])
        new_id = dp.act_add("contact", {"NAME": "Пришёл", "LAST_NAME": "После демо", "ASSIGNED_BY_ID": uid},
                            user_id=uid)
        deadline = time.monotonic() + 30
        row = None
        while row is None and time.monotonic() < deadline:  # waiting for an outcome, not for a clock
            with services.sessions() as session:
                row = session.scalars(select(TrackedEntity).where(
                    TrackedEntity.portal_id == pid, TrackedEntity.entity_id == new_id,
                    TrackedEntity.entity_type == "contact")).one_or_none()
            if row is None:
                stop.wait(0.05)
        assert row is not None and row.status == "NEW"
    finally:
        stop.set()
        serving.join(timeout=30)
    assert not serving.is_alive()

    text = summary_text(res)
    assert f"reverts (changed without a call): {res.reverts}" in text
    assert f"{res.rest_http_requests} HTTP requests" in text


def test_demo_command_prints_the_summary_and_exits(services):
    url = services.settings.database_url
    result = CliRunner().invoke(demo_command, ["--contacts", "300", "--companies", "60", "--days", "4",
                                               "--last-day", "2026-03-10", "--database-url", url, "--exit"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "rate limit raised for the demo" in out
    assert len(re.findall(r"day +\d+/4:", out)) == 4
    assert "REST calls spent:" in out
    reverts = int(re.search(r"reverts \(changed without a call\): (\d+)", out).group(1))
    digests = int(re.search(r"digests sent: (\d+)", out).group(1))
    with services.sessions() as session:
        assert reverts == session.scalar(select(func.count()).select_from(StatusHistory).where(
            StatusHistory.cause == "revert"))
        assert digests == session.scalar(select(func.count()).select_from(NotificationLog).where(
            NotificationLog.kind == "digest", NotificationLog.status == "sent")) > 0
    assert "/app" not in out  # --exit: no serving
    assert "60 companies" in out
    transitions = out.split("transitions by status:", 1)[1].split("reverts", 1)[0]
    assert "EMPTY" not in transitions and "NEW" not in transitions and "Новый" in transitions


def test_demo_contacts_alone_seed_companies_in_proportion(services):
    url = services.settings.database_url
    result = CliRunner().invoke(demo_command, ["--contacts", "240", "--days", "1", "--last-day", "2026-03-10",
                                               "--database-url", url, "--exit"])
    assert result.exit_code == 0, result.output
    assert "240 contacts, 40 companies" in result.output
