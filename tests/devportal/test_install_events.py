"""Install like a portal, event binding and delivery, placements, uninstall."""
from __future__ import annotations

import json

from devportal.server import DevPortalServer
from tests.devportal.conftest import rest


# doc: settings/app-installation/installation-finish.md ; api-reference/widgets/_includes/widget_data.md
def test_installer_page_post_shape(fast_portal, app_peer):
    answer = fast_portal.portal.install_app(app_peer.url, "local.test.1", "secret-1", finish=False)
    path, query, form = app_peer.received[0]
    assert path == "/install"
    assert query["DOMAIN"] == fast_portal.domain and query["PROTOCOL"] == "0" and query["LANG"] == "ru"
    assert len(query["APP_SID"]) == 32
    assert form["AUTH_ID"] == answer["access_token"] and form["REFRESH_ID"] == answer["refresh_token"]
    assert form["AUTH_EXPIRES"] == "3600" and form["status"] == "L"
    assert form["SERVER_ENDPOINT"] == f"{fast_portal.url}/auth/rest/"  # the authorization server
    assert form["member_id"] == fast_portal.portal.member_id
    assert form["PLACEMENT"] == "DEFAULT" and json.loads(form["PLACEMENT_OPTIONS"]) == {}
    assert "installFinish" in answer["answer"]
    info = rest(fast_portal, "app.info", answer["access_token"]).json()["result"]
    assert info["INSTALLED"] is False  # until BX24.installFinish()
    fast_portal.portal.finish_install()
    assert rest(fast_portal, "app.info", answer["access_token"]).json()["result"]["INSTALLED"] is True


# doc: api-reference/common/events/on-app-install.md
def test_api_only_install_posts_onappinstall_with_refresh_token(fast_portal, app_peer):
    answer = fast_portal.portal.install_app(app_peer.url, "local.test.1", "secret-1", api_only=True)
    form = app_peer.posts("/install")[0]
    assert form["event"] == "ONAPPINSTALL"
    assert form["data[VERSION]"] == "1" and form["data[ACTIVE]"] == "Y" and form["data[INSTALLED]"] == "Y"
    assert form["auth[access_token]"] == answer["access_token"]
    assert form["auth[refresh_token]"] == answer["refresh_token"]
    assert form["auth[application_token]"] == answer["application_token"]
    assert form["auth[client_endpoint]"] == f"{fast_portal.url}/rest/"
    assert form["auth[member_id]"] == fast_portal.portal.member_id


# doc: api-reference/events/event-bind.md ; api-reference/events/index.md (online delivery form)
def test_events_are_form_posts_without_refresh_token(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    assert rest(srv, "event.bind", token, event="ONCRMCONTACTUPDATE", handler=f"{peer.url}/events").json()[
        "result"] is True
    dup = rest(srv, "event.bind", token, event="OnCrmContactUpdate", handler=f"{peer.url}/events")
    assert dup.json() == {"error": "ERROR_CORE",
                          "error_description": "Unable to set event handler: Handler already binded"}
    bad = rest(srv, "event.bind", token, event="ONCRMCONTACTADD", handler="http://localhost:9/events")
    assert bad.json()["error"] == "ERROR_WRONG_HANDLER_URL"
    assert rest(srv, "event.bind", token, event="ONNOTHING", handler=f"{peer.url}/e").json()["error"] == \
        "ERROR_EVENT_NOT_FOUND"
    assert rest(srv, "event.get", token).json()["result"] == [
        {"event": "ONCRMCONTACTUPDATE", "handler": f"{peer.url}/events", "auth_type": "0", "offline": 0}]

    cid = srv.portal.act_add("contact", {"NAME": "Нина"}, user_id=1)
    srv.portal.act_update("contact", cid, {"NAME": "Нина Петровна"}, user_id=1)
    # the app's own REST change fires too
    rest(srv, "crm.contact.update", token, id=cid, fields={"LAST_NAME": "Орлова"})
    assert srv.portal.wait_for_deliveries(timeout=5)
    posts = peer.posts("/events")
    assert len(posts) == 2
    form = posts[0]
    assert form["event"] == "ONCRMCONTACTUPDATE" and form["data[FIELDS][ID]"] == str(cid)
    assert form["event_handler_id"] == "1" and form["ts"].isdigit()
    assert form["auth[application_token]"] == answer["application_token"]
    assert form["auth[member_id]"] == srv.portal.member_id and form["auth[user_id]"] == "1"
    assert form["auth[domain]"] == srv.domain and form["auth[client_endpoint]"] == f"{srv.url}/rest/"
    assert {"auth[access_token]", "auth[expires]", "auth[expires_in]", "auth[scope]", "auth[server_endpoint]",
            "auth[status]"} <= set(form)
    assert "auth[refresh_token]" not in form
    assert rest(srv, "profile", form["auth[access_token]"]).status_code == 200
    assert rest(srv, "event.unbind", token, event="ONCRMCONTACTUPDATE", handler=f"{peer.url}/events").json()[
        "result"] == {"count": 1}


def test_ui_app_gets_no_events_before_install_finish(fast_portal, app_peer):
    answer = fast_portal.portal.install_app(app_peer.url, "local.test.1", "secret-1", finish=False)
    rest(fast_portal, "event.bind", answer["access_token"], event="ONCRMCONTACTADD", handler=f"{app_peer.url}/ev")
    fast_portal.portal.act_add("contact", {"NAME": "До"})
    fast_portal.portal.finish_install()
    fast_portal.portal.act_add("contact", {"NAME": "После"})
    assert fast_portal.portal.wait_for_deliveries()
    assert [f["data[FIELDS][ID]"] for f in app_peer.posts("/ev")] == ["2"]


def test_dropped_events_are_never_retried(installed):
    srv, answer, peer = installed
    rest(srv, "event.bind", answer["access_token"], event="ONCRMCOMPANYADD", handler=f"{peer.url}/ev")
    srv.portal.set_faults(drop_events=1.0)
    srv.portal.act_add("company", {"TITLE": "ООО «Лес»"})
    srv.portal.set_faults(drop_events=0.0)
    srv.portal.act_add("company", {"TITLE": "ООО «Поле»"})
    assert srv.portal.wait_for_deliveries()
    assert [f["data[FIELDS][ID]"] for f in peer.posts("/ev")] == ["2"]
    assert [d["status"] for d in srv.portal.deliveries] == ["dropped", 200]


# doc: api-reference/events/offline-events.md ; api-reference/events/event-offline-get.md
def test_offline_events_keep_the_latest_record_per_object(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    assert rest(srv, "event.bind", token, event="ONCRMCONTACTUPDATE", event_type="offline").json()["result"]
    cid = srv.portal.act_add("contact", {"NAME": "A"})
    srv.portal.act_update("contact", cid, {"NAME": "B"})
    srv.portal.act_update("contact", cid, {"NAME": "C"})
    got = rest(srv, "event.offline.get", token).json()["result"]
    assert got["process_id"] is None and len(got["events"]) == 1
    event = got["events"][0]
    assert event["EVENT_NAME"] == "ONCRMCONTACTUPDATE" and event["EVENT_DATA"] == {"FIELDS": {"ID": str(cid)}}
    assert rest(srv, "event.offline.get", token).json()["result"]["events"] == []


# doc: api-reference/widgets/placement-bind.md
def test_placement_bind_rejects_default_and_lists_bindings(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    r = rest(srv, "placement.bind", token, PLACEMENT="DEFAULT", HANDLER=f"{peer.url}/app")
    assert r.status_code == 400 and r.json()["error"] == "ERROR_ARGUMENT" and r.json()["argument"] == "PLACEMENT"
    assert rest(srv, "placement.bind", token, PLACEMENT="CRM_CONTACT_DETAIL_TAB", HANDLER=f"{peer.url}/tab",
                TITLE="Незабыт").json()["result"] is True
    rows = rest(srv, "placement.get", token).json()["result"]
    assert rows[0]["placement"] == "CRM_CONTACT_DETAIL_TAB" and rows[0]["title"] == "Незабыт"
    assert rest(srv, "placement.unbind", token, PLACEMENT="CRM_CONTACT_DETAIL_TAB").json()["result"] == {"count": 1}


# doc: api-reference/common/events/on-app-uninstall.md ; settings/app-uninstallation.md
def test_uninstall_posts_onappuninstall_without_tokens_and_revokes(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    rest(srv, "event.bind", token, event="ONAPPUNINSTALL", handler=f"{peer.url}/bye")
    rest(srv, "app.option.set", token, options={"k": "v"})
    assert srv.portal.uninstall_app(clean=True) == 1
    assert srv.portal.wait_for_deliveries()
    form = peer.posts("/bye")[0]
    assert form["event"] == "ONAPPUNINSTALL" and form["data[CLEAN]"] == "1"
    assert form["auth[application_token]"] == answer["application_token"]
    assert not [k for k in form if "token" in k and k != "auth[application_token]"]
    assert srv.portal.options == {} and srv.portal.bound_events == []
    assert rest(srv, "profile", token).json()["error"] == "invalid_token"


def test_server_is_a_context_manager_and_knows_its_url():
    with DevPortalServer(limits=False) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}" and srv.domain == f"127.0.0.1:{srv.port}"
        assert srv.portal.rest_endpoint == f"{srv.url}/rest/"


# doc: settings/app-installation/local-apps/index.md (an update drops event handlers; the installer re-runs)
def test_update_drops_handlers_and_reopens_the_installer(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    rest(srv, "event.bind", token, event="ONCRMCONTACTADD", handler=f"{peer.url}/events")
    rest(srv, "app.option.set", token, options={"kept": "yes"})
    before = len(peer.posts("/install"))
    update = srv.portal.update_app()
    assert srv.portal.bound_events == [] and srv.portal.options == {"kept": "yes"}
    assert len(peer.posts("/install")) == before + 1 and update["status_code"] == 200
    info = rest(srv, "app.info", update["access_token"]).json()["result"]
    assert info["VERSION"] == 2 and info["INSTALLED"] is True
    assert srv.portal.calls[-1]["user_id"] == 1


# doc: api-reference/events/event-bind.md (ERROR_EVENT_NOT_FOUND) ; api-reference/widgets/placement-bind.md
def test_events_and_placements_outside_the_scope_do_not_exist(fast_portal, app_peer):
    answer = fast_portal.portal.install_app(app_peer.url, "local.test.1", "secret-1", scope="placement,user")
    token = answer["access_token"]
    r = rest(fast_portal, "event.bind", token, event="ONCRMCONTACTADD", handler=f"{app_peer.url}/e")
    assert r.json()["error"] == "ERROR_EVENT_NOT_FOUND"
    r = rest(fast_portal, "placement.bind", token, PLACEMENT="CRM_CONTACT_DETAIL_TAB", HANDLER=f"{app_peer.url}/t")
    assert r.json()["error"] == "ERROR_PLACEMENT_NOT_FOUND"
    assert rest(fast_portal, "event.bind", token, event="ONAPPUNINSTALL",
                handler=f"{app_peer.url}/bye").json()["result"] is True
