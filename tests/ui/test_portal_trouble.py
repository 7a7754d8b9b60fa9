"""A portal in trouble never gives a 500: a busy portal during the access check is "try again"
(503), a portal Bitrix24 blocked (OVERLOAD_LIMIT) shows a one-line banner on the settings page."""
from __future__ import annotations

import time

import responses

from addon.bitrix.rest import BLOCK_KEY
from addon.db import unit_of_work
from addon.models import Portal

from .conftest import ADMIN_AUTH, ENDPOINT, open_app


def _app(services):
    from addon.web import create_app

    return create_app(services).test_client()


def test_a_blocked_portal_shows_a_banner_on_the_settings_page(services, portal, portal_auth):
    with unit_of_work(services.sessions) as session:
        session.get(Portal, portal).parked_methods = {BLOCK_KEY: time.time() + 3600}
    page = open_app(_app(services)).get_data(as_text=True)
    assert 'id="portal-blocked"' in page and "OVERLOAD_LIMIT" in page


def test_no_banner_when_the_portal_is_not_blocked(services, portal, portal_auth):
    assert 'id="portal-blocked"' not in open_app(_app(services)).get_data(as_text=True)


def test_a_portal_at_its_rate_limit_during_the_access_check_is_try_again_not_500(services, portal, monkeypatch):
    import addon.bitrix.client as client_module

    monkeypatch.setattr(client_module, "WEB_DEADLINE", 0.4)
    with responses.RequestsMock() as mock:
        mock.post(f"{ENDPOINT}user.current.json", status=503,
                  json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
        answer = open_app(_app(services), auth=ADMIN_AUTH)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "30"
    assert "try again" in answer.get_data(as_text=True)
