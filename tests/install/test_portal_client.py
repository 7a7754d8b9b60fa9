"""The requests path of the portal client, against `responses` mocks of a portal."""
from __future__ import annotations

import json
import re

import pytest
import responses

from addon.models import Portal
from addon.bitrix.batch import batch_command
from addon.bitrix.bucket import Pace
from addon.bitrix.client import PortalClient
from addon.bitrix.errors import MethodParked, PortalAuthError, PortalError
from tests.install.conftest import ENDPOINT, TOKEN_URL

pytestmark = pytest.mark.usefixtures("mocked_oauth")


def _client(services, portal_id, **kw):
    return PortalClient(services, portal_id, sleep=lambda s: None, **kw)


@responses.activate
def test_call_returns_result_and_sends_the_stored_token(services, portal_id):
    responses.post(ENDPOINT + "profile.json", json={"result": {"ID": "1", "ADMIN": True}, "time": {}})
    client = _client(services, portal_id)
    assert client.call("profile") == {"ID": "1", "ADMIN": True}
    sent = json.loads(responses.calls[0].request.body)
    assert sent["auth"] == "access-1"
    assert client.stats.http_requests == 1


@responses.activate
def test_expired_token_is_refreshed_once_and_the_call_retried(services, portal_id):
    responses.post(ENDPOINT + "crm.contact.get.json",
                   json={"error": "expired_token", "error_description": "The access token provided has expired"},
                   status=401)
    responses.post(ENDPOINT + "crm.contact.get.json", json={"result": {"ID": "5"}})
    responses.get(TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2",
                                   "expires": 1900000000, "expires_in": 3600,
                                   "client_endpoint": ENDPOINT})
    client = _client(services, portal_id)
    assert client.call("crm.contact.get", {"id": 5}) == {"ID": "5"}
    token_calls = [c for c in responses.calls if c.request.url.startswith(TOKEN_URL)]
    assert len(token_calls) == 1
    assert "grant_type=refresh_token" in token_calls[0].request.url
    assert "refresh_token=refresh-1" in token_calls[0].request.url
    assert json.loads(responses.calls[-1].request.body)["auth"] == "access-2"
    with services.sessions() as s:
        portal = s.get(Portal, portal_id)
        assert services.cipher.decrypt(portal.refresh_token_enc) == "refresh-2"


@responses.activate
def test_a_second_401_after_refresh_is_an_auth_error_not_a_loop(services, portal_id):
    responses.post(ENDPOINT + "profile.json", json={"error": "expired_token", "error_description": ""}, status=401)
    responses.get(TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 3600})
    with pytest.raises(PortalAuthError):
        _client(services, portal_id).call("profile")
    assert len([c for c in responses.calls if "profile" in c.request.url]) == 2


@responses.activate
def test_dead_refresh_token_marks_the_portal_and_stops(services, portal_id):
    responses.post(ENDPOINT + "profile.json", json={"error": "expired_token", "error_description": ""}, status=401)
    responses.get(TOKEN_URL, json={"error": "invalid_grant", "error_description": "Invalid grant"}, status=400)
    with pytest.raises(PortalAuthError) as info:
        _client(services, portal_id).call("profile")
    assert info.value.code == "invalid_grant"
    with services.sessions() as s:
        assert s.get(Portal, portal_id).status == "needs_reauth"
    # a later client refuses at once, without calling the portal or the auth server
    calls_before = len(responses.calls)
    with pytest.raises(PortalAuthError):
        _client(services, portal_id).call("profile")
    assert len(responses.calls) == calls_before


@responses.activate
def test_503_backs_off_and_retries_a_bounded_number_of_times(services, portal_id):
    sleeps = []
    responses.post(ENDPOINT + "crm.contact.list.json",
                   json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, status=503)
    responses.post(ENDPOINT + "crm.contact.list.json", json={"result": [], "total": 0})
    client = PortalClient(services, portal_id, sleep=sleeps.append)
    assert client.call("crm.contact.list") == []
    assert sleeps == [0.5]

    responses.replace(responses.POST, ENDPOINT + "crm.contact.list.json",
                      json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": ""}, status=503)
    sleeps.clear()
    with pytest.raises(PortalError) as info:
        client.call("crm.contact.list")
    assert info.value.code == "QUERY_LIMIT_EXCEEDED" and info.value.http_status == 503
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


@responses.activate
def test_429_parks_the_method_until_operating_reset_at(services, portal_id):
    now = [1_700_000_000.0]
    responses.post(ENDPOINT + "crm.contact.list.json",
                   json={"result": [], "time": {"operating_reset_at": 1_700_000_300, "operating": 470}})
    responses.post(ENDPOINT + "crm.contact.list.json",
                   json={"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked"}, status=429)
    client = _client(services, portal_id, clock=lambda: now[0])
    client.call("crm.contact.list")
    with pytest.raises(MethodParked) as info:
        client.call("crm.contact.list")
    assert info.value.until == 1_700_000_300
    with services.sessions() as s:
        assert s.get(Portal, portal_id).parked_methods == {"crm.contact.list": 1_700_000_300}
    # a new client of the same portal honours the park without a request; other methods still run
    responses.post(ENDPOINT + "crm.company.list.json", json={"result": []})
    other = _client(services, portal_id, clock=lambda: now[0])
    count = len(responses.calls)
    with pytest.raises(MethodParked):
        other.call("crm.contact.list")
    assert len(responses.calls) == count
    assert other.call("crm.company.list") == []
    now[0] = 1_700_000_301.0
    responses.replace(responses.POST, ENDPOINT + "crm.contact.list.json", json={"result": [{"ID": "1"}]})
    assert other.call("crm.contact.list") == [{"ID": "1"}]


@responses.activate
def test_errors_are_typed_with_code_description_and_status(services, portal_id):
    responses.post(ENDPOINT + "crm.contact.get.json", json={"error": "", "error_description": "Not found"}, status=400)
    with pytest.raises(PortalError) as info:
        _client(services, portal_id).call("crm.contact.get", {"id": 99})
    assert (info.value.code, info.value.description, info.value.http_status, info.value.method) == (
        "", "Not found", 400, "crm.contact.get")


@responses.activate
def test_list_all_walks_an_id_window_with_start_minus_one(services, portal_id):
    rows = [{"ID": str(i)} for i in range(1, 121)]

    def page(request):
        body = json.loads(request.body)
        assert body["start"] == -1 and body["order"] == {"ID": "ASC"}
        after = int(body["filter"][">ID"])
        chunk = [r for r in rows if int(r["ID"]) > after][:50]
        return 200, {}, json.dumps({"result": chunk, "total": 0})

    responses.add_callback(responses.POST, ENDPOINT + "crm.contact.list.json", callback=page)
    got = list(_client(services, portal_id).list_all("crm.contact.list", filter={"TYPE_ID": "CLIENT"},
                                                    select=["ID"]))
    assert [r["ID"] for r in got] == [str(i) for i in range(1, 121)]
    assert len(responses.calls) == 3
    assert json.loads(responses.calls[0].request.body)["filter"] == {"TYPE_ID": "CLIENT", ">ID": 0}


def test_batch_command_is_a_php_bracket_query():
    cmd = batch_command("crm.contact.update", {"id": 5, "fields": {"OPENED": True, "PHONE": [{"VALUE": "+7 (900) 1&2"}]}})
    assert cmd == "crm.contact.update?id=5&fields[OPENED]=Y&fields[PHONE][0][VALUE]=%2B7%20%28900%29%201%262"


def test_pace_lets_a_burst_through_then_holds_the_rate():
    t = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        t[0] += s

    pace = Pace(rps=2.0, burst=3, clock=lambda: t[0], sleep=sleep)
    for _ in range(3):
        assert pace.acquire() == 0
    assert pace.acquire() == pytest.approx(0.5)
    assert sum(slept) == pytest.approx(0.5)


@responses.activate
def test_user_client_uses_the_users_token_and_never_refreshes(services):
    from addon.bitrix.client import user_client

    responses.post(ENDPOINT + "user.admin.json", json={"result": True})
    responses.post(ENDPOINT + "profile.json", json={"error": "expired_token", "error_description": ""}, status=401)
    client = user_client(ENDPOINT, "user-token")
    assert client.call("user.admin") is True
    assert json.loads(responses.calls[0].request.body)["auth"] == "user-token"
    with pytest.raises(PortalAuthError):
        client.call("profile")
    assert not any(re.search("oauth", c.request.url) for c in responses.calls)
