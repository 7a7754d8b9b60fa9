"""Numbers past the columns' range in the app's pages (card tab options, debug lookup, job and import
IDs, absence marks, transfer users): a clear 400/404 or a field error, never a 500."""
from __future__ import annotations

import json

from werkzeug.datastructures import MultiDict

from addon.options import Options
from tests.ui.conftest import MEMBER_ID, app, client, clock, open_app, page_token, portal, portal_auth  # noqa: F401
from tests.ui.test_settings import settings_form

HUGE = "9" * 40


def test_card_tab_with_an_id_past_the_range_is_a_400(client, portal, portal_auth):
    for options in ({"ID": HUGE}, {"ID": int(HUGE)}, {"ID": "0"}, {"ID": None}, ["ID"], {}):
        answer = client.post("/placement/CRM_CONTACT_DETAIL_TAB?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=ru",
                             data={"AUTH_ID": "admin-auth-id", "member_id": MEMBER_ID,
                                   "PLACEMENT": "CRM_CONTACT_DETAIL_TAB", "PLACEMENT_OPTIONS": json.dumps(options)})
        assert answer.status_code == 400, options


def test_lookups_by_ids_past_the_range_find_nothing(client, portal, portal_auth):
    token = page_token(open_app(client))
    debug = client.post("/ui/debug", data={"t": token, "entity_type": "contact", "entity_id": HUGE})
    assert debug.status_code == 200 and "debug_none" not in debug.get_json()["html"]
    page = client.post("/ui/page", data={"t": token, "tab": "import", "import_job": HUGE})
    assert page.status_code == 200
    for url in (f"/ui/jobs/{HUGE}", f"/ui/import/{HUGE}/report.csv?t={token}"):
        assert client.get(url, headers={"X-Nezabyt-Token": token}).status_code == 404, url
    assert client.post(f"/ui/import/{HUGE}/apply", data={"t": token}).status_code == 404


def test_absence_marks_past_the_range_are_ignored(client, services, portal, portal_auth):
    from addon.robots.store import absent_users

    token = page_token(open_app(client))
    answer = client.post("/ui/robots/absences", data=MultiDict([("t", token), ("shown", HUGE), ("absent", HUGE),
                                                                ("shown", "8"), ("absent", "8")]))
    assert answer.status_code == 200
    with services.sessions() as session:
        assert absent_users(session, portal) == {8}


def test_a_transfer_user_past_the_range_is_a_field_error(client, portal, portal_auth):
    token = page_token(open_app(client))
    form = [(k, v) for k, v in settings_form(Options(time_zone="Europe/Moscow"), token) if k != "transfer_user_id"]
    answer = client.post("/ui/settings", data=MultiDict(form + [("transfer_user_id", HUGE), ("transfer_pool", HUGE),
                                                                ("transfer_pool", "7")]))
    assert answer.status_code == 422
    assert "нужно целое число" in answer.get_data(as_text=True)
