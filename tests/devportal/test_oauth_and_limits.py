"""OAuth expiry and refresh rotation; the leaky bucket and the operating-time limit."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import requests

from tests.devportal.conftest import rest

MSK = ZoneInfo("Europe/Moscow")


def _refresh(srv, refresh_token, client_id="local.test.1", secret="secret-1"):
    return requests.get(f"{srv.url}/oauth/token/", params={
        "grant_type": "refresh_token", "client_id": client_id, "client_secret": secret,
        "refresh_token": refresh_token})


# doc: settings/oauth/index.md ; settings/oauth/auto-renewal.md ; settings/oauth/error-codes.md
def test_expired_token_then_refresh_once_per_refresh_token(installed):
    srv, answer, _ = installed
    srv.portal.expire_tokens()
    r = rest(srv, "profile", answer["access_token"])
    assert r.status_code == 401
    assert r.json() == {"error": "expired_token", "error_description": "The access token provided has expired."}
    fresh = _refresh(srv, answer["refresh_token"])
    assert fresh.status_code == 200
    body = fresh.json()
    assert set(body) >= {"access_token", "refresh_token", "expires", "expires_in", "member_id", "scope",
                         "server_endpoint", "client_endpoint", "domain", "status", "user_id"}
    assert body["client_endpoint"] == f"{srv.url}/rest/" and body["server_endpoint"] == f"{srv.url}/auth/rest/"
    assert body["refresh_token"] != answer["refresh_token"] and body["user_id"] == 1
    assert rest(srv, "profile", body["access_token"]).status_code == 200
    again = _refresh(srv, answer["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert _refresh(srv, body["refresh_token"]).status_code == 200  # the rotated one works once
    assert _refresh(srv, body["refresh_token"], secret="wrong").json()["error"] == "invalid_client"


def test_token_ttl_follows_the_portal_clock(fast_portal, app_peer):
    fast_portal.portal.set_clock(datetime(2025, 1, 1, 9, 0, tzinfo=MSK), frozen=True)
    answer = fast_portal.portal.install_app(app_peer.url, "local.test.1", "secret-1")
    fast_portal.portal.advance(seconds=3599)
    assert rest(fast_portal, "profile", answer["access_token"]).status_code == 200
    fast_portal.portal.advance(seconds=1)
    assert rest(fast_portal, "profile", answer["access_token"]).json()["error"] == "expired_token"


# doc: settings/performance/limits.md (2 requests/s drain, burst 50, 503 QUERY_LIMIT_EXCEEDED)
def test_burst_of_60_gets_503_from_the_51st(devportal, app_peer):
    portal = devportal.portal
    portal.set_clock(datetime(2025, 1, 1, 9, 0, tzinfo=MSK), frozen=True)  # no drain while we fire
    token = portal.install_app(app_peer.url, "local.test.1", "secret-1")["access_token"]
    with requests.Session() as s:
        statuses = [s.get(f"{devportal.url}/rest/profile", params={"auth": token}) for _ in range(60)]
    assert [r.status_code for r in statuses] == [200] * 50 + [503] * 10
    assert statuses[50].json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    portal.advance(seconds=1)  # drains 2
    ok = [requests.get(f"{devportal.url}/rest/profile", params={"auth": token}).status_code for _ in range(3)]
    assert ok == [200, 200, 503]


def test_a_batch_counts_once_in_the_bucket(devportal, app_peer):
    portal = devportal.portal
    portal.set_clock(datetime(2025, 1, 1, 9, 0, tzinfo=MSK), frozen=True)
    token = portal.install_app(app_peer.url, "local.test.1", "secret-1")["access_token"]
    cmd = {f"c{i}": "profile" for i in range(50)}
    for _ in range(50):
        r = rest(devportal, "batch", token, halt=0, cmd=cmd)
        assert r.status_code == 200 and len(r.json()["result"]["result"]) == 50
    assert rest(devportal, "batch", token, cmd=cmd).status_code == 503


# doc: settings/performance/limits.md (operating time per method, 429 OPERATION_TIME_LIMIT)
def test_operating_time_limit_blocks_one_method_until_reset(installed):
    srv, answer, _ = installed
    portal = srv.portal
    portal.set_limits(enabled=True, rps=1000, burst=10000, operating_limit=480)
    portal.set_clock(datetime(2025, 1, 1, 9, 0, tzinfo=MSK), frozen=True)
    portal.set_method_cost("crm.contact.list", 100.0)
    token = answer["access_token"]
    for _ in range(5):
        r = rest(srv, "crm.contact.list", token)
        assert r.status_code == 200
    assert r.json()["time"]["operating"] == 500.0
    assert r.json()["time"]["operating_reset_at"] == int(portal.ts()) + 600
    blocked = rest(srv, "crm.contact.list", token)
    assert blocked.status_code == 429 and blocked.json()["error"] == "OPERATION_TIME_LIMIT"
    assert rest(srv, "crm.company.list", token).status_code == 200  # other methods keep working
    # inside a batch the sub-command is refused, the batch itself is not
    batch = rest(srv, "batch", token, cmd={"a": "crm.contact.list", "b": "crm.company.list"}).json()["result"]
    assert batch["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT" and "b" in batch["result"]
    portal.advance(seconds=601)
    assert rest(srv, "crm.contact.list", token).status_code == 200


def test_faults_fail_next_calls_and_limits_can_be_switched_off(installed):
    srv, answer, _ = installed
    srv.portal.set_faults(fail_next=2, fail_status=500)
    codes = [rest(srv, "profile", answer["access_token"]).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    srv.portal.set_faults(fail_next=1)
    r = rest(srv, "profile", answer["access_token"])
    assert r.status_code == 503 and r.json()["error"] == "QUERY_LIMIT_EXCEEDED"


# doc: settings/oauth/simple-way.md (a trusted answer: app.info at the authorization server);
# api-reference/common/system/app-info.md (the portal's own app.info: ID, CODE, VERSION, no client id)
def test_the_authorization_server_answers_for_every_devportal_of_the_process(installed, authorization_server):
    srv, answer, _ = installed
    # the portal's own app.info is the documented one: it names no client id
    own = rest(srv, "app.info", answer["access_token"]).json()["result"]
    assert set(own) >= {"ID", "CODE", "VERSION", "STATUS", "INSTALLED", "PAYMENT_EXPIRED", "DAYS", "LICENSE"}
    assert "client_id" not in own and "CLIENT_ID" not in own
    assert isinstance(own["ID"], int) and isinstance(own["VERSION"], int) and own["INSTALLED"] is True
    # the authorization server (here another devportal's /auth/) says whose token it is and where
    info = requests.get(f"{authorization_server.oauth_url}rest/app.info", params={"auth": answer["access_token"]},
                        timeout=10)
    assert info.status_code == 200
    result = info.json()["result"]
    assert result["client_id"] == "local.test.1" and result["user_id"] == 1
    assert {k: result["install"][k] for k in ("member_id", "domain", "client_endpoint")} == {
        "member_id": srv.portal.member_id, "domain": srv.domain, "client_endpoint": f"{srv.url}/rest/"}
    forged = requests.get(f"{authorization_server.oauth_url}rest/app.info", params={"auth": "forged"}, timeout=10)
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_token"
    srv.portal.expire_tokens()
    expired = requests.get(f"{srv.oauth_url}rest/app.info", params={"auth": answer["access_token"]}, timeout=10)
    assert expired.status_code == 401 and expired.json()["error"] == "expired_token"
    # refresh there too, with the app's credentials
    fresh = requests.get(f"{authorization_server.oauth_url}oauth/token/", params={
        "grant_type": "refresh_token", "client_id": "local.test.1", "client_secret": "secret-1",
        "refresh_token": answer["refresh_token"]}, timeout=10)
    assert fresh.status_code == 200 and rest(srv, "profile", fresh.json()["access_token"]).status_code == 200
    wrong = requests.get(f"{authorization_server.oauth_url}oauth/token/", params={
        "grant_type": "refresh_token", "client_id": "local.test.1", "client_secret": "wrong",
        "refresh_token": "unknown"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


# doc: _includes/system-errors.md (QUERY_LIMIT_EXCEEDED 503, OVERLOAD_LIMIT 503);
# settings/oauth/error-codes.md (PAYMENT_REQUIRED: no tokens until paid)
def test_faults_per_method_and_for_the_whole_portal(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    srv.portal.set_faults(method_errors={"crm.contact.list": "QUERY_LIMIT_EXCEEDED"})
    r = rest(srv, "crm.contact.list", token)
    assert r.status_code == 503 and r.json()["error"] == "QUERY_LIMIT_EXCEEDED"
    batch = rest(srv, "batch", token, cmd={"a": "crm.contact.list", "b": "crm.company.list"}).json()["result"]
    assert batch["result_error"]["a"]["error"] == "QUERY_LIMIT_EXCEEDED" and "b" in batch["result"]
    srv.portal.set_faults(portal_error="OVERLOAD_LIMIT")
    r = rest(srv, "crm.company.list", token)
    assert r.status_code == 503 and r.json()["error"] == "OVERLOAD_LIMIT"
    srv.portal.set_faults(portal_error="PAYMENT_REQUIRED")
    r = rest(srv, "profile", token)
    assert r.status_code == 402 and r.json()["error"] == "PAYMENT_REQUIRED"
    refused = _refresh(srv, answer["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "PAYMENT_REQUIRED"
    srv.portal.set_faults()
    assert rest(srv, "crm.contact.list", token).status_code == 200
    assert _refresh(srv, answer["refresh_token"]).status_code == 200
    try:
        srv.portal.set_faults(portal_error="NO_SUCH_FAULT")
    except ValueError as exc:
        assert "NO_SUCH_FAULT" in str(exc)
    else:
        raise AssertionError("an unknown fault must be refused")
