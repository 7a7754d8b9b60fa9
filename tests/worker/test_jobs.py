"""The daily run's loss actions, timeline comments and feed post; re-index progress and queued
jobs; redate and the what-if preview; the schedule; the console commands."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from addon.models import JobRun, StatusHistory
from tests.factories import make_job_run
from tests.worker.conftest import DAY0, at


def seeded(h, contacts=40, **opts):
    info = h.dp.seed(departments=2, managers=6, contacts=contacts, companies=4, months_of_calls=0, deals=0,
                     rng_seed=7)
    h.install(**opts)
    return info


def test_loss_opens_transfers_to_the_supervisor_and_tells_everyone(harness):
    h = harness
    info = seeded(h, open_to_all_on_loss=True, transfer_mode="supervisor", timeline_comments=True)
    # Contact 1 belongs to an ordinary manager; its NEW status ran out 2 days ago.
    manager = info["manager_ids"][-1]
    h.dp.records["contact"][1]["ASSIGNED_BY_ID"] = str(manager)
    h.dp.records["contact"][1]["OPENED"] = "N"
    h.put_status("contact", 1, "NEW", at(DAY0 - dt.timedelta(days=12), 10))
    h.reindex(at(DAY0, 8))
    summary = h.daily(at(DAY0, 9))
    assert (summary.losses, summary.transfers) == (1, 1)
    record = h.dp.records["contact"][1]
    dept = h.dp.users[manager]["UF_DEPARTMENT"][0]
    head = int(h.dp.departments[dept]["UF_HEAD"])
    assert (record["OPENED"], int(record["ASSIGNED_BY_ID"])) == ("Y", head)
    assert h.portal_status("contact", 1) == "LOST"
    # One update carried status, OPENED and the new assignee.
    updates = [c for c in h.calls("crm.contact.update", in_batch=True) if str(c["params"].get("id")) == "1"]
    assert len(updates) == 1
    texts = {n["user_id"]: n["message"] for n in h.dp.notifications}
    assert "потерян" in texts[manager]
    assert "потерял" in texts[head] and "передан вам" in texts[head]
    comments = [c for c in h.dp.timeline_comments if str(c.get("ENTITY_ID", c.get("entity_id"))) == "1"]
    assert len(comments) == 1


class DiesAfterTheComments:
    """The portal client of a worker killed right after the portal answered the batch carrying its
    timeline comments, before it could record them as sent."""

    def __init__(self, client):
        self.client, self.died = client, False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def batch(self, commands, halt=False):
        answer = self.client.batch(commands, halt)
        if not self.died and any(m == "crm.timeline.comment.add" for m, _ in commands.values()):
            self.died = True
            raise KeyboardInterrupt("killed")
        return answer


def test_a_comment_sent_just_before_the_worker_died_is_not_posted_again(harness):
    from sqlalchemy import select

    from addon.models import Outbox
    from addon.bitrix.client import PortalClient
    from worker.daily import run_daily

    h = harness
    seeded(h, timeline_comments=True)
    h.put_status("contact", 2, "HOT", at(DAY0 - dt.timedelta(days=30), 10))  # both run out today
    h.put_status("contact", 3, "WARM", at(DAY0 - dt.timedelta(days=60), 10))
    h.reindex(at(DAY0, 8))
    with PortalClient(h.services, h.portal_id) as client:
        dying = DiesAfterTheComments(client)
        with pytest.raises(KeyboardInterrupt):
            run_daily(h.services, h.portal_id, at(DAY0, 9), client=dying)
    assert dying.died
    h.daily(at(DAY0, 9, 5))
    for cid, text in ((2, f"Не забыт, {DAY0:%d.%m.%Y}: статус сменился с «Горячий» на «Тёплый»."),
                      (3, f"Не забыт, {DAY0:%d.%m.%Y}: статус сменился с «Тёплый» на «Холодный».")):
        comments = [c["COMMENT"] for c in h.dp.timeline_comments if str(c["ENTITY_ID"]) == str(cid)]
        assert comments == [text]
    with h.services.sessions() as session:
        rows = session.scalars(select(Outbox).where(Outbox.method == "crm.timeline.comment.add")).all()
        assert {(r.status, r.error) for r in rows} == {("sent", "confirmed after an interruption")}


def test_round_robin_pool_and_feed_post(harness):
    h = harness
    info = seeded(h, contacts=30)
    pool = tuple(info["manager_ids"][:3])
    h.set_options(transfer_mode="pool", transfer_pool=pool, feed_post=True, feed_post_days=3,
                  notify_supervisor_on_loss=False)
    for cid in range(1, 7):  # six clients lost today
        h.dp.records["contact"][cid]["ASSIGNED_BY_ID"] = str(info["manager_ids"][-1])
        h.put_status("contact", cid, "NEW", at(DAY0 - dt.timedelta(days=10), 10))
    for cid in range(7, 10):  # three change within the feed window
        h.put_status("contact", cid, "NEW", at(DAY0 - dt.timedelta(days=8), 10))
    h.reindex(at(DAY0, 8))
    h.daily(at(DAY0, 9))
    owners = [int(h.dp.records["contact"][c]["ASSIGNED_BY_ID"]) for c in range(1, 7)]
    active = [u for u in pool if h.dp.users[u]["ACTIVE"]]
    assert owners == [active[i % len(active)] for i in range(6)]  # round robin over the active
    posts = h.dp.blog_posts
    assert posts and all(len(p.get("DEST") or p.get("dest") or []) == 1 for p in posts)
    # The next run continues the round robin where this one stopped.
    with h.services.sessions() as s:
        job = s.scalars(select(JobRun).where(JobRun.kind == "daily")).one()
    assert pool[job.summary["pool_cursor"] - 1] == owners[-1]


def test_missed_runs_catch_up_exactly_and_warn_once(harness):
    h = harness
    seeded(h)
    h.put_status("contact", 1, "HOT", at(DAY0, 10))  # due DAY0+30, warned DAY0+27
    h.reindex(at(DAY0, 11))
    h.daily(at(DAY0 + dt.timedelta(days=1), 9))
    # No run from day 2 to day 120: the run of day 121 walks every step, each dated its due day.
    summary = h.daily(at(DAY0 + dt.timedelta(days=121), 9))
    with h.services.sessions() as s:
        steps = [(x.from_status, x.to_status, x.changed_on) for x in s.scalars(
            select(StatusHistory).where(StatusHistory.cause == "decay").order_by(StatusHistory.id))]
    assert steps == [("HOT", "WARM", DAY0 + dt.timedelta(days=30)), ("WARM", "COLD", DAY0 + dt.timedelta(days=90))]
    assert summary.steps == 2 and h.portal_status("contact", 1) == "COLD"
    # Day 121 is also past COLD's warning day? No: COLD is due on day 180, warned on day 177.
    assert summary.warnings == 0
    warned = h.daily(at(DAY0 + dt.timedelta(days=178), 9))  # its warning day (177) fell in the gap
    assert warned.warnings == 1
    assert h.daily(at(DAY0 + dt.timedelta(days=179), 9)).warnings == 0


def test_reindex_progress_queued_jobs_redate_and_preview(harness):
    h = harness
    seeded(h, contacts=120)
    for cid in range(1, 121):
        h.put_status("contact", cid, "WARM", at(DAY0 - dt.timedelta(days=cid % 50), 10))
    with h.services.sessions() as s:
        job_id = make_job_run(s, h.portal_id, kind="reindex").id
        s.commit()
    from worker.jobs import run_queued_jobs

    report = run_queued_jobs(h.services, at(DAY0, 8))
    assert report.jobs == 1 and report.errors == []
    with h.services.sessions() as s:
        job = s.get(JobRun, job_id)
        assert job.status == "done"
        assert job.progress_done == job.progress_total >= 120
    assert h.row("contact", 5).due_on == DAY0 - dt.timedelta(days=5) + dt.timedelta(days=60)

    from addon.dating import preview_changes, redate

    opts = h.options()
    shorter = dataclasses.replace(opts, statuses=tuple(dataclasses.replace(s, days=30) if s.code == "WARM" else s
                                                       for s in opts.statuses))
    preview = preview_changes(h.services, h.portal_id, shorter, DAY0)
    # WARM set 30..49 days ago would fall to COLD at once under 30 days; under 60 nothing moves.
    expected = sum(1 for cid in range(1, 121) if cid % 50 >= 30)
    assert preview["entities"] == expected and preview["with_current_options"] == 0
    assert preview["by_status"] == {"WARM->COLD": expected}
    assert sum(preview["by_manager"].values()) == expected and len(preview["sample"]) == min(20, expected)
    h.set_options(statuses=shorter.statuses)
    assert redate(h.services, h.portal_id) >= 120
    assert h.row("contact", 5).due_on == DAY0 - dt.timedelta(days=5) + dt.timedelta(days=30)


def test_schedule_is_declared_once_with_one_instance_and_coalescing(services):
    from worker.schedule import SCHEDULE, build_scheduler, resolve

    names = [j.name for j in SCHEDULE]
    assert len(names) == len(set(names))
    for job in SCHEDULE:
        assert callable(resolve(job.target))
    scheduler = build_scheduler(services, blocking=False)
    jobs = scheduler.get_jobs()
    assert sorted(j.id for j in jobs) == sorted(names)
    assert all(j.max_instances == 1 and j.coalesce for j in jobs)
    assert not scheduler.running  # built, not started: nothing runs at import or build time


def test_daily_run_waits_for_the_portal_notification_time(harness):
    h = harness
    seeded(h)
    h.set_options(notify_time="10:00")
    from worker.jobs import daily_is_due, drain_and_run

    assert not daily_is_due(h.services, h.portal_id, at(DAY0, 9, 59))
    assert daily_is_due(h.services, h.portal_id, at(DAY0, 10, 0))
    report = drain_and_run(h.services, at(DAY0, 10, 1))
    assert report.daily_runs == 1
    assert not daily_is_due(h.services, h.portal_id, at(DAY0, 15))
    assert drain_and_run(h.services, at(DAY0, 15)).daily_runs == 0


def test_console_commands(harness):
    h = harness
    seeded(h)
    h.put_status("contact", 3, "NEW", at(DAY0 - dt.timedelta(days=11), 10))
    s = h.services.settings
    env = {"DATABASE_URL": s.database_url, "NEZABYT_SECRET_KEY": s.secret_key, "NEZABYT_CLIENT_ID": s.client_id,
           "NEZABYT_CLIENT_SECRET": s.client_secret, "NEZABYT_PORTAL_RPS": "1000", "NEZABYT_PORTAL_BURST": "1000"}
    from addon.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["reindex", "--portal", h.dp.domain, "--now", at(DAY0, 8).isoformat()], env=env)
    assert result.exit_code == 0, result.output
    assert "tracked 1" in result.output
    result = runner.invoke(main, ["decay", "--portal", h.dp.member_id, "--now", at(DAY0, 9).isoformat()], env=env)
    assert result.exit_code == 0, result.output
    assert "1 clients decayed" in result.output and "NEW->LOST: 1" in result.output
    result = runner.invoke(main, ["debug", "--portal", h.dp.member_id, "--entity", "contact:3", "--json"], env=env)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["row"]["status"] == "LOST"
    assert [(x["from_status"], x["to_status"], x["cause"]) for x in found["history"]] == [
        (None, "NEW", "index"), ("NEW", "LOST", "decay")]
    result = runner.invoke(main, ["debug", "--portal", h.dp.member_id, "--entity", "contact:3"], env=env)
    assert "NEW -> LOST [decay]" in result.output
    result = runner.invoke(main, ["worker", "--once", "--now", at(DAY0, 9, 30).isoformat()], env=env)
    assert result.exit_code == 0, result.output
    assert "daily runs 0" in result.output  # today's run is done
    result = runner.invoke(main, ["decay", "--portal", "nobody.example", "--now", at(DAY0, 9).isoformat()], env=env)
    assert result.exit_code != 0 and "no portal" in result.output


def test_daily_run_redates_when_the_settings_changed_behind_its_back(harness):
    h = harness
    seeded(h)
    h.put_status("contact", 2, "WARM", at(DAY0 - dt.timedelta(days=40), 10))
    h.reindex(at(DAY0, 8))
    assert h.daily(at(DAY0, 9)).decayed == 0  # WARM lasts 60 days
    opts = h.options()
    h.set_options(statuses=tuple(dataclasses.replace(s, days=30) if s.code == "WARM" else s
                                 for s in opts.statuses))  # saved without re-dating the table
    summary = h.daily(at(DAY0 + dt.timedelta(days=1), 9))
    assert summary.decayed == 1 and h.portal_status("contact", 2) == "COLD"
    assert h.row("contact", 2).status_set_on == DAY0 - dt.timedelta(days=10)  # counted from its due date


def test_the_table_remembers_the_options_it_was_dated_under(harness):
    """A new portal starts dated (no rows yet), so its first daily run does not re-read the whole
    table; a save the re-date did not follow leaves the mark behind, and the next run re-dates."""
    from sqlalchemy import select, update

    from addon.engine import load_context
    from addon.models import PortalSettings, TrackedEntity
    from addon.dating import redate

    h = harness
    seeded(h)

    def versions():
        with h.services.sessions() as session:
            ctx = load_context(session, h.portal_id)
            return ctx.settings_version, ctx.dated_version

    def due_of(cid):
        with h.services.sessions() as session:
            return session.scalar(select(TrackedEntity.due_on).where(
                TrackedEntity.portal_id == h.portal_id, TrackedEntity.entity_id == cid))

    version, dated = versions()
    assert dated == version  # the installer's mark
    h.put_status("contact", 3, "WARM", at(DAY0 - dt.timedelta(days=40), 10))
    h.reindex(at(DAY0, 8))
    assert due_of(3) == DAY0 + dt.timedelta(days=20)
    opts = h.options()
    h.set_options(statuses=tuple(dataclasses.replace(s, days=50) if s.code == "WARM" else s
                                 for s in opts.statuses))
    assert versions() == (version + 1, version)  # saved, not re-dated
    h.daily(at(DAY0, 9))
    assert due_of(3) == DAY0 + dt.timedelta(days=10) and versions() == (version + 1, version + 1)
    # A portal from before the mark (NULL after the migration): a re-date sets it.
    with h.services.sessions() as session:
        session.execute(update(PortalSettings).where(PortalSettings.portal_id == h.portal_id)
                        .values(dated_version=None))
        session.commit()
    assert redate(h.services, h.portal_id) >= 1 and versions() == (version + 1, version + 1)


def test_days_and_the_notification_time_follow_the_portal_time_zone(harness):
    from addon.engine import PortalContext
    from addon.options import Options, parse_time_zone
    from worker.jobs import daily_is_due

    ctx = PortalContext(portal_id=1, opts=Options(time_zone="+10:00"), tz=parse_time_zone("+10:00"))
    assert ctx.day_of("2026-03-02T23:30:00+03:00") == dt.date(2026, 3, 3)  # already the 3rd in +10
    assert ctx.day_of("2026-03-02T23:30:00") == dt.date(2026, 3, 2)  # no offset: the portal's own time
    assert ctx.today(dt.datetime(2026, 3, 2, 20, 30, tzinfo=dt.timezone.utc)) == dt.date(2026, 3, 3)
    h = harness
    seeded(h)
    h.set_options(time_zone="+10:00", notify_time="09:00")
    utc = dt.timezone.utc
    assert not daily_is_due(h.services, h.portal_id, dt.datetime(2026, 3, 1, 22, 59, tzinfo=utc))
    assert daily_is_due(h.services, h.portal_id, dt.datetime(2026, 3, 1, 23, 0, tzinfo=utc))


def test_a_scheduled_job_runs_as_a_plain_function_of_services_and_now(harness):
    from worker.schedule import SCHEDULE, run_job

    h = harness
    seeded(h)
    h.put_status("contact", 4, "NEW", at(DAY0 - dt.timedelta(days=10), 10))
    h.reindex(at(DAY0, 8))
    job = next(j for j in SCHEDULE if j.target == "worker.jobs:drain_and_run")
    report = run_job(h.services, job, clock=lambda: at(DAY0, 9, 1))
    assert report.daily_runs == 1 and h.portal_status("contact", 4) == "LOST"


def test_only_the_tracked_entity_types_decay(harness):
    h = harness
    seeded(h)
    h.put_status("contact", 1, "NEW", at(DAY0 - dt.timedelta(days=11), 10))
    h.put_status("company", 1, "NEW", at(DAY0 - dt.timedelta(days=11), 10))
    h.reindex(at(DAY0, 8))
    h.set_options(entity_types=("company",))  # the admin now tracks companies only
    assert h.daily(at(DAY0, 9)).decayed == 1
    assert (h.portal_status("contact", 1), h.portal_status("company", 1)) == ("NEW", "LOST")


def test_a_job_left_running_by_a_dead_worker_is_resumed(harness):
    h = harness
    seeded(h, contacts=30)
    with h.services.sessions() as s:
        orphan_id = make_job_run(s, h.portal_id, kind="reindex", status="running", owner="gone-host:4242").id
        s.commit()
    from worker.jobs import run_queued_jobs

    # A job "running" under this very worker's name is its own and is left alone.
    mine = h.services.settings.worker_id
    with h.services.sessions() as s:
        make_job_run(s, h.portal_id, kind="reindex", status="running", owner=mine)
        s.commit()
    report = run_queued_jobs(h.services, at(DAY0, 8))
    assert report.jobs == 1 and report.errors == []
    with h.services.sessions() as s:
        job = s.get(JobRun, orphan_id)
        assert job.status == "done" and job.owner == mine
        assert job.progress_done == job.progress_total >= 30
        assert s.scalar(select(func.count()).select_from(JobRun).where(JobRun.status == "running")) == 1


def test_worker_once_writes_the_heartbeat(harness, monkeypatch):
    """`worker --once` stamps the worker's heartbeat before and after its pass (and every few
    seconds during it), as the long-running worker does."""
    from addon.heartbeat import last_beat
    from addon.models import WorkerHeartbeat

    h = harness
    seeded(h)
    s = h.services.settings
    env = {"DATABASE_URL": s.database_url, "NEZABYT_SECRET_KEY": s.secret_key, "NEZABYT_CLIENT_ID": s.client_id,
           "NEZABYT_CLIENT_SECRET": s.client_secret, "NEZABYT_PORTAL_RPS": "1000", "NEZABYT_PORTAL_BURST": "1000"}
    with h.services.sessions() as session:
        session.query(WorkerHeartbeat).delete()
        session.commit()
    assert last_beat(h.services) is None
    from addon.cli import main

    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    result = CliRunner().invoke(main, ["worker", "--once", "--now", at(DAY0, 9, 30).isoformat()], env=env)
    assert result.exit_code == 0, result.output
    beat = last_beat(h.services)
    assert beat is not None
    worker_id, when = beat
    import os

    assert worker_id == f"{os.uname().nodename}:{os.getpid()}"  # this process ran the command
    assert when >= before
