"""The fast intake path (issue 7): one statement per usual event, the decrypted token reused, and
every change of the portal (new token, uninstall, purge) still seen by the very next event."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, func, select, update

from addon.db import unit_of_work
from addon.intake import EventIntake, IntakeError
from addon.models import Portal, StoredEvent
from addon.web import create_app
from addon.bitrix.tokens import save_application_token
from tests.install.test_intake import event_form


@pytest.fixture
def intake(services):
    return EventIntake(services.intake_engine, services.cipher)


def form_of(**fields):
    """The parsed shape store_event receives (what parse_php_form makes of event_form)."""
    flat = event_form(**fields)
    form = {"auth": {}, "data": {"FIELDS": {}}}
    for key, value in flat.items():
        if key.startswith("auth["):
            form["auth"][key[5:-1]] = value
        elif key == "data[FIELDS][ID]":
            form["data"]["FIELDS"]["ID"] = value
        else:
            form[key] = value
    return form


class StatementLog:
    """Every SQL statement the engine sends, in order."""

    def __init__(self, engine):
        self.engine, self.sql = engine, []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, *_args):
        self.sql.append(" ".join(statement.split()))

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._seen)


@pytest.fixture
def statements(services):
    log = StatementLog(services.intake_engine)
    yield log
    log.close()


class CountingCipher:
    """The services' cipher, counting decryptions."""

    def __init__(self, cipher):
        self.cipher, self.decrypted = cipher, 0

    def decrypt(self, value):
        self.decrypted += 1
        return self.cipher.decrypt(value)

    def encrypt(self, value):
        return self.cipher.encrypt(value)


def stored_count(services) -> int:
    with services.sessions() as s:
        return s.scalar(select(func.count()).select_from(StoredEvent))


def test_a_known_portal_costs_one_statement_per_event(services, portal_id, intake, statements):
    first = intake.store_event(form_of(ts="1"))
    assert not first.duplicate and first.portal_id == portal_id
    statements.sql.clear()
    for ts in range(2, 12):
        assert not intake.store_event(form_of(ts=str(ts))).duplicate
    assert len(statements.sql) == 10
    assert all(sql.startswith("INSERT INTO stored_event") and "ON CONFLICT (portal_id, dedupe_key) DO NOTHING"
               in sql and "FROM portal WHERE" in sql for sql in statements.sql)
    assert stored_count(services) == 11
    with services.sessions() as s:  # what the worker reads is what the ORM path stored before
        row = s.scalars(select(StoredEvent).order_by(StoredEvent.id.desc())).first()
        assert (row.portal_id, row.event_name, row.entity_type, row.entity_id, row.source, row.attempts) == (
            portal_id, "ONCRMCONTACTUPDATE", "contact", 42, "online", 0)
        assert row.dedupe_key == "ONCRMCONTACTUPDATE:42:11" and row.received_at is not None
        assert row.payload["auth"] == {k: v for k, v in form_of()["auth"].items()
                                       if k not in ("access_token", "application_token")}


def test_the_token_is_decrypted_once_and_a_new_token_is_seen_at_once(services, portal_id):
    cipher = CountingCipher(services.cipher)
    intake = EventIntake(services.intake_engine, cipher)
    for ts in range(1, 6):
        intake.store_event(form_of(ts=str(ts)))
    assert cipher.decrypted == 1
    # A reinstall gives the portal a new application token: the old one is refused by the next event.
    with unit_of_work(services.sessions) as session:
        save_application_token(session, session.get(Portal, portal_id), "app-token-2")
    with pytest.raises(IntakeError) as refused:
        intake.store_event(form_of(ts="6"))
    assert refused.value.status == 401
    assert not intake.store_event(form_of(ts="7", token="app-token-2")).duplicate
    assert not intake.store_event(form_of(ts="8", token="app-token-2")).duplicate
    assert cipher.decrypted == 2
    assert stored_count(services) == 7


@pytest.mark.parametrize("change", ["uninstalled", "purged"])
def test_an_uninstall_is_seen_by_the_next_event(services, portal_id, intake, change):
    intake.store_event(form_of(ts="1"))
    with unit_of_work(services.sessions) as session:
        if change == "uninstalled":
            session.execute(update(Portal).where(Portal.id == portal_id).values(status="uninstalled"))
        else:
            from install.uninstall import purge_portal

            purge_portal(session, portal_id)
    with pytest.raises(IntakeError) as refused:
        intake.store_event(form_of(ts="2"))
    assert refused.value.status == 401
    assert stored_count(services) == (1 if change == "uninstalled" else 0)


def test_a_forged_token_is_refused_and_does_not_unsettle_the_known_portal(services, portal_id, intake,
                                                                         statements):
    intake.store_event(form_of(ts="1"))
    for forged in ("app-token-X", "app-token-", "x" * 200):
        with pytest.raises(IntakeError) as refused:
            intake.store_event(form_of(ts="2", token=forged))
        assert refused.value.status == 401
    statements.sql.clear()
    assert not intake.store_event(form_of(ts="2")).duplicate
    assert len(statements.sql) == 1
    assert stored_count(services) == 2


def test_a_duplicate_answers_the_stored_id(services, portal_id, intake):
    first = intake.store_event(form_of(ts="1"))
    again = intake.store_event(form_of(ts="1"))
    assert again.duplicate and again.event_id == first.event_id
    # a fresh process (nothing known yet) answers the same
    assert EventIntake(services.intake_engine, services.cipher).store_event(form_of(ts="1")).event_id == first.event_id
    assert stored_count(services) == 1


def test_a_missing_entity_id_is_400_only_for_the_portal_itself(services, portal_id, intake):
    for token, status in (("app-token-1", 400), ("forged", 401)):
        with pytest.raises(IntakeError) as refused:
            intake.store_event(form_of(token=token, **{"data[FIELDS][ID]": ""}))
        assert refused.value.status == status
    assert stored_count(services) == 0


def test_the_inserts_are_compiled_once(intake):
    # sqlalchemy#10445: the dialects' on_conflict_do_nothing() has no cache key, so it would be
    # compiled on every event; the text statements intake uses have one.
    assert intake._insert._generate_cache_key() is not None
    assert intake._guarded_insert._generate_cache_key() is not None


def test_two_first_events_racing_adopt_one_token(services, monkeypatch):
    """A portal installed from the UI has no application token; if another delivery adopted one
    while this one was confirming its access token, this one is checked against it."""
    from tests.install.conftest import make_portal

    portal_id = make_portal(services, application_token=None)

    def other_delivery_wins(_endpoint, _access_token, _pace=None):
        with unit_of_work(services.sessions) as session:
            portal = session.get(Portal, portal_id)
            if portal.application_token_enc is None:
                save_application_token(session, portal, "t-winner")
        return True

    monkeypatch.setattr("addon.intake._access_token_works", other_delivery_wins)
    with pytest.raises(IntakeError) as refused:
        EventIntake(services.intake_engine, services.cipher).store_event(form_of(ts="1", token="t-loser"))
    assert refused.value.status == 401
    with unit_of_work(services.sessions) as session:
        session.get(Portal, portal_id).application_token_enc = None
    assert not EventIntake(services.intake_engine, services.cipher).store_event(form_of(ts="2", token="t-winner")).duplicate
    with services.sessions() as s:
        assert services.cipher.decrypt(s.get(Portal, portal_id).application_token_enc) == "t-winner"
    assert stored_count(services) == 1


def test_a_connection_the_server_closed_costs_no_event(services, portal_id, intake):
    """The receivers' pool has no pre-ping (a round trip per event): when PostgreSQL drops its
    connections (a restart, an idle timeout) the next event meets the closed connection in its own
    statement and is stored on a new one; the portal never sees an error."""
    from sqlalchemy import text

    if services.settings.is_sqlite:
        pytest.skip("SQLite has no server to close a connection")
    assert not services.intake_engine.pool._pre_ping and services.engine.pool._pre_ping
    assert not intake.store_event(form_of(ts="1")).duplicate
    with services.intake_engine.connect() as conn:
        intake_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with services.engine.connect() as conn:  # the pool kept that connection: it is the next one used
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": intake_pid}).scalar()
    second = intake.store_event(form_of(ts="2"))
    assert not second.duplicate and stored_count(services) == 2
    with services.intake_engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != intake_pid


def test_concurrent_deliveries_store_each_change_once(services, portal_id):
    """Eight threads through one app (as gunicorn's gthread worker runs it): the same change
    delivered by all of them is stored once; distinct changes are all stored."""
    web = create_app(services)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def deliver(thread_no: int):
        client = web.test_client()
        start.wait()
        for n in range(5):
            for ts in ("1", f"{thread_no}-{n}"):
                answer = client.post("/events", data=event_form(ts=ts))
                with lock:
                    answers.append((answer.status_code, answer.json["status"]))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(code == 200 for code, _ in answers) and len(answers) == 80
    assert sum(1 for _, status in answers if status == "stored") == 41
    assert stored_count(services) == 41


def test_the_procfile_web_process_serves_events(services, settings, portal_id):
    """The Procfile's `web:` command with gunicorn.conf.py, on a free port of 127.0.0.1: events are
    verified, stored once and answered as in the test client."""
    import os
    import shlex
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import requests

    root = Path(__file__).resolve().parents[2]
    web = next(line for line in (root / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = shlex.split(web[len("web:"):])
    assert command[0] == "gunicorn" and "gunicorn.conf.py" in command
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command[0] = str(Path(sys.executable).with_name("gunicorn"))
    env = dict(os.environ, PORT=str(port), WEB_CONCURRENCY="1", DATABASE_URL=settings.database_url,
               NEZABYT_SECRET_KEY=settings.secret_key)
    # The config binds 0.0.0.0 for a platform; this test keeps to 127.0.0.1.
    server = subprocess.Popen(command + ["--bind", f"127.0.0.1:{port}"], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # waiting for a process to listen, not for a clock
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not listening, or its worker still loading
                pass
            assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        with requests.Session() as http:
            answers = [http.post(f"{base}/events", data=event_form(ts=ts), timeout=10) for ts in ("1", "2", "1")]
            assert [(a.status_code, a.json()["status"]) for a in answers] == [
                (200, "stored"), (200, "stored"), (200, "duplicate")]
            assert http.post(f"{base}/events", data=event_form(ts="3", token="forged"), timeout=10).status_code == 401
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()
    assert stored_count(services) == 2


def test_receivers_open_no_session_cookie_but_other_pages_do(services, portal_id):
    from flask import session

    app = create_app(services)
    seen = {}

    @app.get("/_probe_session")
    def probe():
        session["x"] = 1
        return "ok"

    @app.after_request
    def remember(response):
        from flask import request

        seen[request.path] = app.session_interface.is_null_session(session._get_current_object())
        return response

    client = app.test_client()
    assert client.post("/events", data=event_form()).status_code == 200
    assert client.post("/robots/nezabyt_distribute_deal", data={"event_token": "e1", "auth[member_id]": "m-acme",
                                             "auth[application_token]": "app-token-1"}).status_code == 200
    answer = client.get("/_probe_session")
    # /events is answered before Flask (no request context at all); robots get the null session.
    assert seen == {"/robots/nezabyt_distribute_deal": True, "/_probe_session": False}
    assert "session=" in answer.headers.get("Set-Cookie", "")


def test_events_are_answered_before_flask_and_other_bodies_still_reach_it(services, portal_id):
    """The fast path takes url-encoded events; a multipart body, a chunked one and the install
    events go on to the Flask route, which answers the same."""
    app = create_app(services)
    through_flask = []
    app.before_request(lambda: through_flask.append(1) and None)
    client = app.test_client()
    first = client.post("/events", data=event_form(ts="1"))
    assert (first.status_code, first.json["status"], through_flask) == (200, "stored", [])
    again = client.post("/events", data=event_form(ts="1"))
    assert (again.json["status"], again.json["id"]) == ("duplicate", first.json["id"])
    forged = client.post("/events", data=event_form(ts="2", token="forged"))
    assert (forged.status_code, forged.json["error"], through_flask) == (401, "unauthorized", [])
    multipart = client.post("/events", data=event_form(ts="3"), content_type="multipart/form-data")
    assert (multipart.status_code, multipart.json["status"], len(through_flask)) == (200, "stored", 1)
    assert stored_count(services) == 2
