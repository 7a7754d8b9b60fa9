"""Fixtures of the install/intake tests: a stored portal with encrypted tokens."""
from __future__ import annotations

import datetime as dt

import pytest

from addon.db import unit_of_work
from addon.bitrix.tokens import save_application_token, save_tokens
from tests import factories

ENDPOINT = "https://acme.bitrix24.test/rest/"
OAUTH = "https://oauth.bitrix24.test/rest/"
OAUTH_URL = "https://oauth.bitrix24.test/"
TOKEN_URL = "https://oauth.bitrix24.test/oauth/token/"


def make_portal(services, member_id="m-acme", domain="acme.bitrix24.test", access="access-1",
                refresh="refresh-1", application_token="app-token-1", client_endpoint=ENDPOINT,
                server_endpoint=OAUTH) -> int:
    with unit_of_work(services.sessions) as session:
        portal = factories.make_portal(session, member_id=member_id, domain=domain, client_endpoint=client_endpoint,
                                       server_endpoint=server_endpoint, scope="crm")
        save_tokens(session, portal, access, refresh, dt.datetime(2030, 1, 1))
        if application_token:
            save_application_token(session, portal, application_token)
        factories.make_settings(session, portal.id)
        return portal.id


@pytest.fixture
def portal_id(services) -> int:
    return make_portal(services)


@pytest.fixture
def mocked_oauth(services):
    """The authorization server at OAUTH_URL, for tests that mock it with `responses`."""
    import dataclasses

    services.settings = dataclasses.replace(services.settings, oauth_url=OAUTH_URL)
    return services
