"""`nezabyt doctor`: every check passes on a healthy deployment, and each check's ✗ path, made
the way it happens in production, against the devportal."""
from __future__ import annotations

import dataclasses
import datetime as dt
import socket

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select

from addon.doctor import deployment
from addon.doctor.probe import REQUIRED_SCOPES
from addon.doctor.report import render, run_checks
from addon.heartbeat import beat, last_beat
from addon.models import JobRun, Outbox, Portal, PortalSettings, StoredEvent, utcnow
from addon.bitrix.client import PortalClient
from tests.deploy.conftest import LONG_SECRET, install
from tests.factories import make_job_run

NOW = None  # doctor's own clock: the devportal and the stored rows are on real time here


def by_name(checks, name: str):
    found = [c for c in checks if c.name == name]
    assert found, (name, render(checks))
    return found[0]


def failing(checks) -> set[str]:
    return {c.name for c in checks if not c.ok}


def portal_row(services) -> Portal:
    with services.sessions() as s:
        return s.scalars(select(Portal)).one()


def test_a_healthy_deployment_passes_every_check(healthy):
    checks = run_checks(healthy)
    assert failing(checks) == set(), render(checks)
    names = [c.name for c in checks]
    assert names == ["secret key", "public URL is https", "public URL answers", "database migrated",
                     "worker heartbeat", "tokens valid", "scopes granted", "event handlers", "robots",
                     "status fields", "time zone", "events in the last day", "last daily run", "parked or failing"]
    assert "all checks passed" in render(checks)


# --- the deployment ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, found", [("", "not set"), ("nezabyt-development-secret-change-me", "not set"),
                                        ("short-but-set", "13 characters")])
def test_secret_key_unset_default_or_short(settings, key, found):
    check = deployment.check_secret_key(dataclasses.replace(settings, secret_key=key))
    assert not check.ok and found in check.found and "secrets.token_urlsafe" in check.fix
    assert deployment.check_secret_key(dataclasses.replace(settings, secret_key=LONG_SECRET)).ok


def test_public_url_not_https(settings):
    for url in ("http://nezabyt.example.com", "https://", ""):
        check = deployment.check_public_url_https(dataclasses.replace(settings, public_url=url))
        assert not check.ok and "NEZABYT_PUBLIC_URL=https://" in check.fix


def test_public_url_that_nobody_answers(settings):
    with socket.socket() as s:  # a port just freed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check = deployment.check_public_url_answers(dataclasses.replace(settings, public_url=f"https://127.0.0.1:{port}"))
    assert not check.ok and "Connection" in check.found and "proxy" in check.fix


def test_public_url_with_an_untrusted_certificate(production_services, tls, monkeypatch):
    from tests.deploy.conftest import HttpsApp

    server = HttpsApp(production_services, *tls)
    try:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # a certificate nobody vouches for
        check = deployment.check_public_url_answers(production_services.settings)
        assert not check.ok and "SSLError" in check.found and "certificate" in check.fix
    finally:
        server.stop()


def test_database_not_migrated_or_unreachable(tmp_path, settings):
    from addon.services import services_scope

    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    with services_scope(dataclasses.replace(settings, database_url=empty)) as services:
        check = deployment.check_database(services)
        assert not check.ok and "no revision" in check.found and "nezabyt db upgrade" in check.fix
        checks = run_checks(services)
        assert [c.portal for c in checks] == [None] * 5  # no portal is looked at without a database
    nowhere = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"
    with services_scope(dataclasses.replace(settings, database_url=nowhere)) as services:
        check = deployment.check_database(services)
        assert not check.ok and "DATABASE_URL" in check.fix


def test_worker_never_beat_or_silent_for_over_a_minute(services):
    now = dt.datetime.now(dt.timezone.utc)
    check = deployment.check_worker(services, now)
    assert not check.ok and check.found == "no worker has ever reported"
    beat(services, "w1", now - dt.timedelta(minutes=5))
    beat(services, "w2", now - dt.timedelta(seconds=61))
    check = deployment.check_worker(services, now)
    assert not check.ok and "61 s ago from w2" in check.found and "restart" in check.fix
    beat(services, "w1", now - dt.timedelta(seconds=10))
    assert deployment.check_worker(services, now).ok
    assert last_beat(services)[0] == "w1"


def test_a_beat_replaces_the_workers_row_and_forgets_long_gone_workers(services):
    from addon.models import WorkerHeartbeat

    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
    beat(services, "gone", now - dt.timedelta(days=2))
    beat(services, "w", now - dt.timedelta(seconds=30))
    beat(services, "w", now)
    with services.sessions() as s:
        rows = s.execute(select(WorkerHeartbeat.worker_id, WorkerHeartbeat.beat_at)).all()
    assert rows == [("w", now.replace(tzinfo=None))]


# --- a portal ------------------------------------------------------------------------------------

def test_tokens_the_portal_no_longer_accepts(healthy, devportal):
    with devportal.portal.lock:  # the portal forgot the app's tokens (revoked, or a restore)
        devportal.portal.access_tokens.clear()
        devportal.portal.refresh_tokens.clear()
    checks = run_checks(healthy)
    tokens = by_name(checks, "tokens valid")
    assert not tokens.ok and "opens the app" in tokens.fix
    # Without a token nothing more is asked of the portal; the stored state is still checked.
    names = {c.name for c in checks if c.portal}
    assert "scopes granted" not in names and "events in the last day" in names


def test_scopes_missing(production_services, devportal, https_app):
    install(devportal, https_app, scope="crm,user,department,placement,log,bizproc")
    check = by_name(run_checks(production_services), "scopes granted")
    assert not check.ok and "missing im, task" in check.found and "reinstall" in check.fix


def test_optional_telephony_not_granted_is_fine(production_services, devportal, https_app):
    install(devportal, https_app, scope=",".join(REQUIRED_SCOPES))
    check = by_name(run_checks(production_services), "scopes granted")
    assert check.ok and "optional not granted: telephony" in check.found


def test_event_handlers_missing_or_bound_to_another_address(healthy, devportal, https_app):
    portal_id = portal_row(healthy).id
    with PortalClient(healthy, portal_id) as client:
        client.call("event.unbind", {"event": "ONCRMCONTACTUPDATE", "handler": f"{https_app.url}/events"})
    check = by_name(run_checks(healthy), "event handlers")
    assert not check.ok and "ONCRMCONTACTUPDATE" in check.found
    # The deployment moved to a new address but the portal was not updated.
    healthy.settings = dataclasses.replace(healthy.settings, public_url="https://nezabyt.example.com")
    checks = run_checks(healthy, get=lambda url, timeout: _ok())
    handlers = by_name(checks, "event handlers")
    assert not handlers.ok and f"bound elsewhere: {https_app.url}/events" in handlers.found
    assert not by_name(checks, "robots").ok


def test_robots_missing(healthy, devportal):
    portal_id = portal_row(healthy).id
    with PortalClient(healthy, portal_id) as client:
        code = client.call("bizproc.robot.list")[0]
        client.call("bizproc.robot.delete", {"CODE": code})
    check = by_name(run_checks(healthy), "robots")
    assert not check.ok and "1 of 20 not registered" in check.found


def test_robots_registered_by_another_version(healthy):
    portal_id = portal_row(healthy).id
    with healthy.sessions.begin() as s:
        row = s.get(PortalSettings, portal_id)
        robots = dict(row.field_items["robots"])
        robots[sorted(robots)[0]] = "0" * 40
        row.field_items = {**row.field_items, "robots": robots}
    check = by_name(run_checks(healthy), "robots")
    assert not check.ok and "1 registered for another address" in check.found


def test_status_field_deleted_or_item_map_incomplete(healthy, devportal):
    portal_id = portal_row(healthy).id
    with healthy.sessions.begin() as s:
        row = s.get(PortalSettings, portal_id)
        items = {k: v for k, v in row.field_items["company"].items() if k != "HOT"}
        row.field_items = {**row.field_items, "company": items}
    check = by_name(run_checks(healthy), "status fields")
    assert not check.ok and "company: item map incomplete (HOT)" in check.found
    with devportal.portal.lock:
        devportal.portal.userfields["contact"].clear()
    check = by_name(run_checks(healthy), "status fields")
    assert "contact: no status field" in check.found


def test_time_zone_unknown(healthy):
    portal_id = portal_row(healthy).id
    with healthy.sessions.begin() as s:
        row = s.get(PortalSettings, portal_id)
        row.data = {**row.data, "time_zone": "Mars/Olympus_Mons"}
    checks = run_checks(healthy)
    check = by_name(checks, "time zone")
    assert not check.ok and "unknown time zone" in check.found and "Europe/Moscow" in check.fix
    assert by_name(checks, "last daily run").ok  # the other checks still run


def test_no_event_in_the_last_day(healthy):
    portal_id = portal_row(healthy).id
    with healthy.sessions.begin() as s:
        for ev in s.scalars(select(StoredEvent).where(StoredEvent.portal_id == portal_id)):
            ev.received_at = utcnow() - dt.timedelta(days=1, minutes=1)
    check = by_name(run_checks(healthy), "events in the last day")
    assert not check.ok and check.found == "none received"


def test_daily_run_never_ran_failed_or_stale(healthy):
    portal = portal_row(healthy)
    with healthy.sessions.begin() as s:
        s.get(Portal, portal.id).installed_at = utcnow() - dt.timedelta(days=3)
    check = by_name(run_checks(healthy), "last daily run")
    assert not check.ok and check.found == "never ran"
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=3))).date()
    with healthy.sessions.begin() as s:
        make_job_run(s, portal.id, day=today - dt.timedelta(days=4), status="done")
    check = by_name(run_checks(healthy), "last daily run")
    assert not check.ok and "4 days ago" in check.found
    with healthy.sessions.begin() as s:
        make_job_run(s, portal.id, day=today, status="failed", error="PortalError: boom")
    check = by_name(run_checks(healthy), "last daily run")
    assert not check.ok and "failed: PortalError: boom" in check.found
    with healthy.sessions.begin() as s:
        s.scalars(select(JobRun).where(JobRun.status == "failed")).one().status = "done"
    assert by_name(run_checks(healthy), "last daily run").ok


def test_parked_method_failing_events_and_failed_writes(healthy):
    portal_id = portal_row(healthy).id
    until = dt.datetime.now(dt.timezone.utc).timestamp() + 600
    with healthy.sessions.begin() as s:
        s.get(Portal, portal_id).parked_methods = {"crm.contact.list": until}
        s.scalars(select(StoredEvent).where(StoredEvent.portal_id == portal_id)).first().error = "PortalError: x"
        s.add(Outbox(portal_id=portal_id, key="w1", method="crm.contact.update", params={}, status="failed"))
    check = by_name(run_checks(healthy), "parked or failing")
    assert not check.ok
    assert "parked (operating time limit): crm.contact.list" in check.found
    assert "1 events failing" in check.found and "1 writes, 0 messages" in check.found
    with healthy.sessions.begin() as s:
        s.get(Portal, portal_id).parked_methods = {"crm.contact.list": until - 1200}  # expired
        s.execute(delete(Outbox))
        for ev in s.scalars(select(StoredEvent)):
            ev.error = None
    assert by_name(run_checks(healthy), "parked or failing").ok


def test_a_portal_waiting_for_reauthorization(healthy):
    with healthy.sessions.begin() as s:
        portal = s.scalars(select(Portal)).one()
        portal.status, portal.status_reason = "needs_reauth", "token refresh refused: invalid_grant"
    checks = run_checks(healthy)
    assert {"tokens valid", "parked or failing"} <= failing(checks)
    assert "invalid_grant" in by_name(checks, "parked or failing").found


# --- the command ---------------------------------------------------------------------------------

def _ok():
    class Answer:
        status_code = 200
        headers = {"Content-Type": "application/json"}
        text = '{"status": "ok"}'

        @staticmethod
        def json():
            return {"status": "ok"}

    return Answer()


def _env(services) -> dict[str, str]:
    s = services.settings
    return {"DATABASE_URL": s.database_url, "NEZABYT_SECRET_KEY": s.secret_key, "NEZABYT_PUBLIC_URL": s.public_url,
            "NEZABYT_CLIENT_ID": s.client_id, "NEZABYT_CLIENT_SECRET": s.client_secret}


def test_the_command_exits_non_zero_on_a_problem_and_zero_when_healthy(healthy, devportal):
    from addon.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["doctor"], env=_env(healthy))
    assert result.exit_code == 0, result.output
    assert "✓  tokens valid" in result.output and result.output.rstrip().endswith("all checks passed")
    result = runner.invoke(main, ["doctor", "--portal", devportal.domain, "--json"], env=_env(healthy))
    assert result.exit_code == 0 and '"name": "robots"' in result.output
    with healthy.sessions.begin() as s:
        s.get(Portal, portal_row(healthy).id).parked_methods = {"im.notify.system.add": 4102444800}
    result = runner.invoke(main, ["doctor"], env=_env(healthy))
    assert result.exit_code == 1
    assert "✗  parked or failing" in result.output and "1 problem found" in result.output
    result = runner.invoke(main, ["doctor", "--portal", "nobody.bitrix24.test"], env=_env(healthy))
    assert result.exit_code != 0 and "no portal 'nobody.bitrix24.test'" in result.output
