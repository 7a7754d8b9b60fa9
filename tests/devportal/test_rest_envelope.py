"""REST transport and envelopes of the devportal, pinned with raw HTTP."""
from __future__ import annotations

import requests

from tests.devportal.conftest import rest

TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish", "operating_reset_at",
             "operating"}


# doc: api-reference/data-types.md (the `time` object); settings/how-to-call-rest-api/general-principles.md
def test_success_envelope_has_full_time_object(installed):
    srv, answer, _ = installed
    r = rest(srv, "profile", answer["access_token"])
    assert r.status_code == 200
    body = r.json()
    assert body["result"]["ID"] == "1" and body["result"]["ADMIN"] is True
    assert set(body["time"]) == TIME_KEYS
    assert body["time"]["date_start"].endswith("+03:00")


# doc: settings/how-to-call-rest-api/data-encoding.md
def test_query_string_form_brackets_and_json_body_are_equivalent(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    by_json = rest(srv, "crm.contact.add", token, fields={"NAME": "Иван", "PHONE": [{"VALUE": "+7 999 1"}]}).json()
    by_form = requests.post(f"{srv.url}/rest/crm.contact.add.json",
                            data={"auth": token, "fields[NAME]": "Пётр", "fields[PHONE][0][VALUE]": "+7 999 2",
                                  "fields[PHONE][0][VALUE_TYPE]": "MOBILE"}).json()
    by_query = requests.get(f"{srv.url}/rest/crm.contact.add", params={
        "auth": token, "fields[NAME]": "Анна", "fields[LAST_NAME]": "Котова"}).json()
    assert [by_json["result"], by_form["result"], by_query["result"]] == [1, 2, 3]
    got = requests.get(f"{srv.url}/rest/CRM.Contact.Get.json", params={"auth": token, "id": 2}).json()["result"]
    assert got["NAME"] == "Пётр"
    assert got["PHONE"] == [{"ID": "2", "VALUE_TYPE": "MOBILE", "VALUE": "+7 999 2", "TYPE_ID": "PHONE"}]
    assert got["ID"] == "2" and got["ASSIGNED_BY_ID"] == "1"  # IDs are strings
    third = rest(srv, "crm.contact.get", token, id=3).json()["result"]
    assert third["LAST_NAME"] == "Котова"


# doc: settings/how-to-call-rest-api/authorization.md (auth parameter or Bearer header)
def test_bearer_header_is_accepted(installed):
    srv, answer, _ = installed
    r = requests.get(f"{srv.url}/rest/user.current", headers={"Authorization": f"Bearer {answer['access_token']}"})
    assert r.status_code == 200 and r.json()["result"]["ID"] == "1"


# doc: settings/how-to-call-rest-api/error-codes.md ; _includes/system-errors.md
def test_auth_errors_have_status_code_and_no_time(installed):
    srv, answer, _ = installed
    missing = rest(srv, "profile")
    assert missing.status_code == 401
    assert missing.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
    wrong = rest(srv, "profile", "nope")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_token"
    assert "time" not in wrong.json()
    unknown = rest(srv, "crm.contact.teleport", answer["access_token"])
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


# doc: api-reference/crm/contacts/crm-contact-get.md (legacy errors have an empty code)
def test_legacy_crm_errors_have_empty_code(installed):
    srv, answer, _ = installed
    r = rest(srv, "crm.contact.get", answer["access_token"], id=999)
    assert r.status_code == 400
    assert r.json() == {"error": "", "error_description": "Not found"}
    r = rest(srv, "crm.company.update", answer["access_token"], id=0, fields={"TITLE": "x"})
    assert r.json() == {"error": "", "error_description": "ID is not defined or invalid."}


def test_calls_are_recorded_with_method_status_and_error(installed):
    srv, answer, _ = installed
    rest(srv, "Crm.Contact.Get", answer["access_token"], id=5)
    call = srv.portal.calls[-1]
    assert call["method"] == "crm.contact.get" and call["status"] == 400 and call["error"] == ""
    assert call["params"] == {"id": 5} and call["in_batch"] is False
    assert srv.portal.http_requests >= 1


# doc: api-reference/common/system/server-time.md
def test_server_time_uses_the_portal_clock(installed):
    from datetime import datetime
    from zoneinfo import ZoneInfo
    srv, answer, _ = installed
    srv.portal.set_clock(datetime(2025, 3, 7, 18, 0, tzinfo=ZoneInfo("Europe/Moscow")), frozen=True)
    assert rest(srv, "server.time", answer["access_token"]).json()["result"] == "2025-03-07T18:00:00+03:00"
    srv.portal.advance(days=3)
    assert srv.portal.now().isoformat() == "2025-03-10T18:00:00+03:00"


# doc: settings/oauth/error-codes.md (insufficient_scope)
def test_methods_outside_the_app_scope_are_refused(fast_portal, app_peer):
    answer = fast_portal.portal.install_app(app_peer.url, "local.test.1", "secret-1", scope="crm,placement")
    assert rest(fast_portal, "crm.contact.list", answer["access_token"]).status_code == 200
    refused = rest(fast_portal, "tasks.task.add", answer["access_token"], fields={"TITLE": "x"})
    assert refused.status_code == 401 and refused.json()["error"] == "insufficient_scope"
    assert rest(fast_portal, "profile", answer["access_token"]).status_code == 200


def test_cli_command_is_wired_into_nezabyt():
    from click.testing import CliRunner

    from addon.cli import main

    result = CliRunner().invoke(main, ["devportal", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--seed", "--rps", "--burst", "--no-limits", "--token-ttl", "--tz"):
        assert option in result.output
