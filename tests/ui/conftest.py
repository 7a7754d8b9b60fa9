"""Fixtures of the settings UI tests: a portal row, the Flask app with a movable clock, and the
portal's answers to the access check (`user.current`, `user.admin`) mocked with `responses`."""
from __future__ import annotations

import datetime as dt
import time

import pytest
import responses

from addon.options import Options
from tests.factories import make_portal, make_settings, make_tracked

ENDPOINT = "https://acme.bitrix24.ru/rest/"
MEMBER_ID = "acme-member-0001"
ADMIN_AUTH = "admin-auth-id"
MANAGER_AUTH = "manager-auth-id"
MANAGER_ID = 7
FIELD_ITEMS = {et: {"NEW": "41", "IN_WORK": "42", "HOT": "43", "WARM": "44", "COLD": "45", "LOST": "46"}
               for et in ("contact", "company")}


class Clock:
    """Unix seconds the app reads; tests move it instead of sleeping."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def portal(services):
    with services.sessions() as session:
        p = make_portal(session, member_id=MEMBER_ID, domain="acme.bitrix24.ru", client_endpoint=ENDPOINT,
                        time_zone="Europe/Moscow")
        make_settings(session, p.id, Options(time_zone="Europe/Moscow"), field_items=FIELD_ITEMS)
        session.commit()
        return p.id


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def app(services, clock):
    from flask import Flask

    from settings_ui.pages import register_pages

    flask_app = Flask("nezabyt-ui-test")
    register_pages(flask_app, services, clock=clock)
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def portal_auth():
    """The portal confirms two users: an admin (ID 1) and a manager (ID 7)."""
    users = {ADMIN_AUTH: (1, True), MANAGER_AUTH: (MANAGER_ID, False)}

    def answer(method):
        def callback(request):
            import json

            body = json.loads(request.body or b"{}")
            known = users.get(body.get("auth"))
            if known is None:
                return 401, {}, json.dumps({"error": "invalid_token", "error_description": "Unable to authorize"})
            user_id, admin = known
            result = {"ID": str(user_id), "NAME": "Anna", "LAST_NAME": "Admin" if admin else "Manager"} \
                if method == "user.current" else admin
            return 200, {}, json.dumps({"result": result, "time": {}})
        return callback

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("user.current", "user.admin"):
            mock.add_callback(responses.POST, f"{ENDPOINT}{method}.json", callback=answer(method),
                              content_type="application/json")
        yield mock


def open_app(client, auth=ADMIN_AUTH, lang="ru"):
    return client.post(f"/app?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG={lang}&APP_SID=x",
                       data={"AUTH_ID": auth, "AUTH_EXPIRES": "3600", "member_id": MEMBER_ID, "PLACEMENT": "DEFAULT",
                             "PLACEMENT_OPTIONS": "{}"})


def page_token(response) -> str:
    import re

    match = re.search(r'data-token="([^"]+)"', response.get_data(as_text=True))
    assert match, "the page carries no token"
    return match.group(1)


def add_tracked(services, portal_id, entity_id, status, set_on, assigned=MANAGER_ID, entity_type="contact",
                title=None, options=None):
    from addon.rules import Entity, dates

    opts = options or Options(time_zone="Europe/Moscow")
    due, warn = dates(opts, Entity(status=status, status_set_on=set_on))
    with services.sessions() as session:
        make_tracked(session, portal_id, entity_id, status, entity_type=entity_type, status_set_on=set_on, due_on=due,
                     warn_on=warn, assigned_by_id=assigned, title=title or f"Client {entity_id}")
        session.commit()


def today_msk() -> dt.date:
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=3))).date()


# --- against the devportal -------------------------------------------------------------------------
@pytest.fixture
def fast_devportal():
    """A devportal with its rate limit off: bulk tests measure our batching, not the bucket."""
    from devportal.server import DevPortalServer

    server = DevPortalServer(limits=False)
    server.start()
    yield server
    server.stop()


def install_on(services, devportal, app_server, events: bool = True) -> int:
    """Install the app on the devportal as a portal admin would; returns the Portal row's id.
    With `events=False` the portal stops delivering events (bulk tests that write thousands of
    clients do not need 10,000 echoes)."""
    import dataclasses

    from sqlalchemy import select

    from addon.models import Portal

    services.settings = dataclasses.replace(services.settings, portal_rps=1000.0, portal_burst=1000)
    s = services.settings
    answer = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 200, answer["answer"][:500]
    if not events:
        with devportal.portal.lock:
            devportal.portal.bound_events.clear()
    with services.sessions() as session:
        return session.scalars(select(Portal)).one().id


def add_contacts(devportal, n: int, start_phone: int = 9170000000) -> list[int]:
    """n contacts with one phone each (+7 917 ...), the e-mail c<i>@example.com."""
    ids = []
    for i in range(n):
        ids.append(int(devportal.portal.act_add("contact", {
            "NAME": f"Клиент {i}", "PHONE": [{"VALUE": f"+7{start_phone + i}", "VALUE_TYPE": "WORK"}],
            "EMAIL": [{"VALUE": f"c{i}@example.com", "VALUE_TYPE": "WORK"}]})))
    return ids


def update_calls(devportal, entity_type: str = "contact") -> list[dict]:
    return [c for c in devportal.portal.calls if c["method"] == f"crm.{entity_type}.update"
            and c.get("in_batch") and c.get("status", 200) == 200]
