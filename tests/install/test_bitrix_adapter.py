"""The Bitrix24 adapter (addon.bitrix) against `responses` mocks: error kinds, the user client's pace
and back-off within a web deadline, writes never re-sent blindly, OVERLOAD_LIMIT stopping calls."""
from __future__ import annotations

import json

import pytest
import responses

from addon.bitrix import errors
from addon.bitrix.client import PortalClient, portal_client, user_client
from addon.bitrix.errors import PortalBlocked, PortalBusy, PortalError, is_permanent
from addon.bitrix.rest import BLOCK_KEY, HTTP_TIMEOUT, endpoint_of_location, is_idempotent
from addon.models import Portal
from tests.install.conftest import ENDPOINT

LIMIT = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


@pytest.mark.parametrize("code", ["insufficient_scope", "INVALID_CREDENTIALS", "user_access_error",
                                  "WRONG_AUTH_TYPE", "ERROR_BATCH_METHOD_NOT_ALLOWED"])
def test_refusals_a_retry_cannot_fix_are_permanent_even_inside_a_batch(code):
    # Inside a batch a command's error has no HTTP status: the code alone must decide.
    assert is_permanent(PortalError(code, "", None, "im.notify.system.add"))
    assert errors.http_status_of(code) in (403, 405)


@pytest.mark.parametrize("code,kind", [
    ("QUERY_LIMIT_EXCEEDED", errors.RATE_LIMIT), ("OPERATION_TIME_LIMIT", errors.RATE_LIMIT),
    ("OVERLOAD_LIMIT", errors.BLOCKED), ("expired_token", errors.TOKEN_EXPIRED),
    ("invalid_grant", errors.GRANT_DEAD), ("PAYMENT_REQUIRED", errors.PAYMENT),
    ("INTERNAL_SERVER_ERROR", errors.TEMPORARY), ("PORTAL_MOVED", errors.PORTAL_MOVED),
    ("ACCESS_DENIED", errors.PERMANENT)])
def test_every_code_has_one_kind(code, kind):
    assert errors.kind_of(code) == kind
    assert is_permanent(PortalError(code)) == (kind == errors.PERMANENT)


def test_legacy_crm_errors_without_a_code_are_read_by_their_text():
    assert is_permanent(PortalError("", "Not found", None, "crm.contact.get"))
    assert errors.is_not_found(PortalError("", "Not found", 400, "crm.contact.get"))
    assert not errors.is_not_found(PortalError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404, "x.y"))
    assert not is_permanent(PortalError("ERROR_CORE", "SQL failure", 500, "crm.contact.get"))


def test_the_read_timeout_outlasts_a_60_second_portal_request():
    assert HTTP_TIMEOUT[1] > 60


def test_reads_and_setting_writes_may_be_repeated_adds_may_not():
    assert is_idempotent("crm.contact.get") and is_idempotent("crm.contact.update")
    assert is_idempotent("im.notify.system.add", {"TAG": "x"})
    assert not is_idempotent("crm.timeline.comment.add") and not is_idempotent("tasks.task.add")


def test_a_redirect_location_gives_the_new_rest_base():
    assert endpoint_of_location("https://new.bitrix24.ru/rest/profile.json", "profile") == "https://new.bitrix24.ru/rest/"
    assert endpoint_of_location("/relative", "profile") is None


@responses.activate
def test_the_user_client_backs_off_on_the_rate_limit_like_the_app_client():
    sleeps = []
    responses.post(ENDPOINT + "app.info.json", json=LIMIT, status=503)
    responses.post(ENDPOINT + "app.info.json", json=LIMIT, status=503)
    responses.post(ENDPOINT + "app.info.json", json={"result": {"ID": "7"}})
    client = user_client(ENDPOINT, "user-token", sleep=sleeps.append)
    assert client.call("app.info") == {"ID": "7"}
    assert sleeps == [0.5, 1.0]


@responses.activate
def test_the_user_client_gives_up_at_its_deadline_with_a_try_again_error():
    sleeps = []
    responses.post(ENDPOINT + "profile.json", json=LIMIT, status=503)
    client = user_client(ENDPOINT, "user-token", sleep=sleeps.append, deadline=2.0)
    with pytest.raises(PortalBusy) as info:
        client.call("profile")
    assert info.value.code == "QUERY_LIMIT_EXCEEDED" and errors.is_temporary(info.value)
    assert sum(sleeps) <= 2.0 and sleeps == [0.5, 1.0]


@responses.activate
def test_a_write_answered_500_is_not_sent_again(services, portal_id):
    responses.post(ENDPOINT + "crm.timeline.comment.add.json",
                   json={"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}, status=500)
    client = PortalClient(services, portal_id, sleep=lambda s: None)
    with pytest.raises(PortalError) as info:
        client.call("crm.timeline.comment.add", {"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "contact", "COMMENT": "x"}})
    assert info.value.uncertain
    assert len(responses.calls) == 1


@responses.activate
def test_a_read_answered_500_is_retried(services, portal_id):
    responses.post(ENDPOINT + "crm.contact.get.json", json={"error": "INTERNAL_SERVER_ERROR"}, status=500)
    responses.post(ENDPOINT + "crm.contact.get.json", json={"result": {"ID": "5"}})
    assert PortalClient(services, portal_id, sleep=lambda s: None).call("crm.contact.get", {"id": 5}) == {"ID": "5"}


@responses.activate
def test_overload_limit_stops_every_client_of_the_portal_until_the_probe_time(services, portal_id):
    now = [1_700_000_000.0]
    responses.post(ENDPOINT + "crm.contact.list.json",
                   json={"error": "OVERLOAD_LIMIT", "error_description": "REST API is blocked due to overload"},
                   status=503)
    sleeps = []
    client = PortalClient(services, portal_id, sleep=sleeps.append, clock=lambda: now[0])
    with pytest.raises(PortalBlocked):
        client.call("crm.contact.list")
    assert len(responses.calls) == 1 and sleeps == []  # not retried in a loop
    with services.sessions() as s:
        assert s.get(Portal, portal_id).parked_methods[BLOCK_KEY] > now[0]
    other = PortalClient(services, portal_id, clock=lambda: now[0])
    with pytest.raises(PortalBlocked):
        other.call("profile")  # no request: the block is stored on the portal
    assert len(other.batch({"a": ("crm.contact.get", {"id": 1})}).errors) == 1
    assert len(responses.calls) == 1
    # an hour later one probe goes out; it works, so the block is cleared for everyone
    now[0] += 3601
    responses.post(ENDPOINT + "profile.json", json={"result": {"ID": "1"}})
    assert PortalClient(services, portal_id, clock=lambda: now[0]).call("profile") == {"ID": "1"}
    with services.sessions() as s:
        assert BLOCK_KEY not in s.get(Portal, portal_id).parked_methods


@responses.activate
def test_a_moved_portal_is_asked_again_at_its_new_address_with_the_token(services, portal_id):
    new = "https://renamed.bitrix24.test/rest/"
    responses.post(ENDPOINT + "profile.json", status=302, headers={"Location": new + "profile.json"})
    responses.post(new + "profile.json", json={"result": {"ID": "1"}})
    client = portal_client(services, portal_id)
    assert client.call("profile") == {"ID": "1"}
    assert json.loads(responses.calls[1].request.body)["auth"] == "access-1"
    with services.sessions() as s:
        portal = s.get(Portal, portal_id)
        assert (portal.client_endpoint, portal.domain) == (new, "renamed.bitrix24.test")


@responses.activate
def test_a_redirect_from_https_down_to_http_is_not_followed(services, portal_id):
    responses.post(ENDPOINT + "profile.json", status=302, headers={"Location": "http://renamed.bitrix24.test/rest/"})
    with pytest.raises(errors.PortalMoved):
        portal_client(services, portal_id).call("profile")
    assert len(responses.calls) == 1  # the token never went out in clear
    with services.sessions() as s:
        assert s.get(Portal, portal_id).client_endpoint == ENDPOINT


@responses.activate
@pytest.mark.usefixtures("mocked_oauth")
def test_a_lapsed_subscription_pauses_the_portal_and_it_resumes_without_a_reinstall(services, portal_id):
    from tests.install.conftest import TOKEN_URL

    responses.post(ENDPOINT + "profile.json", json={"error": "expired_token", "error_description": ""}, status=401)
    responses.get(TOKEN_URL, json={"error": "PAYMENT_REQUIRED", "error_description": "Payment required"}, status=400)
    with pytest.raises(PortalError) as info:
        PortalClient(services, portal_id, sleep=lambda s: None).call("profile")
    assert info.value.code == "PAYMENT_REQUIRED", info.value
    assert info.value.kind == errors.PAYMENT and not is_permanent(info.value) and errors.is_temporary(info.value)
    with services.sessions() as s:
        assert s.get(Portal, portal_id).status == "active"  # not needs_reauth
    # paid again: the same refresh token works and calls go through
    responses.replace(responses.GET, TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2",
                                                      "expires_in": 3600})
    responses.replace(responses.POST, ENDPOINT + "profile.json", json={"result": {"ID": "1"}})
    assert PortalClient(services, portal_id, sleep=lambda s: None).call("profile") == {"ID": "1"}
