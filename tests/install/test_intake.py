"""Event and robot intake through the real Flask app (test client): parse, verify, store, answer."""
from __future__ import annotations

import json

import pytest
import responses
from sqlalchemy import func, select

from addon.intake import parse_php_form
from addon.models import StoredEvent
from addon.web import create_app


@pytest.fixture
def web(services):
    return create_app(services).test_client()


def event_form(event="ONCRMCONTACTUPDATE", entity_id="42", ts="1727018926", member="m-acme", token="app-token-1",
               **extra):
    form = {"event": event, "event_handler_id": "58", "data[FIELDS][ID]": entity_id, "ts": ts,
            "auth[access_token]": "user-access-secret", "auth[expires_in]": "3600", "auth[scope]": "crm",
            "auth[domain]": "acme.bitrix24.test", "auth[server_endpoint]": "https://oauth.bitrix24.test/rest/",
            "auth[status]": "L", "auth[client_endpoint]": "https://acme.bitrix24.test/rest/",
            "auth[member_id]": member, "auth[user_id]": "1", "auth[application_token]": token}
    form.update(extra)
    return {k: v for k, v in form.items() if v is not None}


def stored(services):
    with services.sessions() as s:
        return s.scalars(select(StoredEvent).order_by(StoredEvent.id)).all()


def test_parse_php_form_nests_brackets_and_lists():
    form = parse_php_form([("data[FIELDS][ID]", "7"), ("document_id[0]", "crm"), ("document_id[1]", "CCrmDocumentDeal"),
                           ("document_id[2]", "DEAL_5"), ("properties[users][]", "user_1"),
                           ("properties[users][]", "user_2"), ("event", "X")])
    assert form == {"data": {"FIELDS": {"ID": "7"}}, "document_id": ["crm", "CCrmDocumentDeal", "DEAL_5"],
                    "properties": {"users": ["user_1", "user_2"]}, "event": "X"}
    with pytest.raises(ValueError):
        parse_php_form([("a[b", "1")])


def test_a_verified_event_is_stored_without_tokens_and_acknowledged(services, portal_id, web):
    answer = web.post("/events", data=event_form())
    assert answer.status_code == 200 and answer.json["status"] == "stored"
    [event] = stored(services)
    assert (event.portal_id, event.event_name, event.entity_type, event.entity_id, event.source) == (
        portal_id, "ONCRMCONTACTUPDATE", "contact", 42, "online")
    assert event.payload["auth"]["member_id"] == "m-acme"
    assert "access_token" not in event.payload["auth"] and "application_token" not in event.payload["auth"]


def test_a_replayed_event_is_stored_once(services, portal_id, web):
    assert web.post("/events", data=event_form()).json["status"] == "stored"
    assert web.post("/events", data=event_form()).json["status"] == "duplicate"
    assert web.post("/events", data=event_form(ts="1727018999")).json["status"] == "stored"
    assert len(stored(services)) == 2


@pytest.mark.parametrize("form, status", [
    (event_form(token="forged"), 401),
    (event_form(member="someone-else"), 401),
    (event_form(**{"auth[application_token]": None}), 400),
    (event_form(**{"auth[member_id]": None}), 400),
    (event_form(event=None), 400),
    (event_form(**{"data[FIELDS][ID]": None}), 400),
    ({"event": "ONCRMCONTACTUPDATE", "a[b": "1"}, 400),
])
def test_forged_or_malformed_events_are_refused_and_store_nothing(services, portal_id, web, form, status):
    answer = web.post("/events", data=form)
    assert answer.status_code == status
    assert answer.json["error_description"]
    assert stored(services) == []


def test_a_body_over_the_limit_is_413(services, portal_id, web):
    answer = web.post("/events", data=event_form(padding="x" * (65 * 1024)))
    assert answer.status_code == 413
    assert stored(services) == []


@responses.activate
def test_a_portal_without_a_token_yet_adopts_the_first_the_portal_confirms(services, web):
    from tests.install.conftest import make_portal

    make_portal(services, application_token=None)

    def app_info(request):  # the portal knows only the real access token
        ok = json.loads(request.body).get("auth") == "user-access-secret"
        return (200, {}, json.dumps({"result": {"ID": "1", "INSTALLED": True}, "time": {}})) if ok else (
            401, {}, json.dumps({"error": "invalid_token", "error_description": "Unable to get application by token"}))

    responses.add_callback(responses.POST, "https://acme.bitrix24.test/rest/app.info.json", callback=app_info)
    # Another domain, or an access token the portal does not know: refused, nothing adopted or stored.
    assert web.post("/events", data=event_form(token="t-first", **{"auth[domain]": "evil.test"})).status_code == 401
    assert web.post("/events", data=event_form(token="t-forged", **{"auth[access_token]": "guess"})).status_code == 401
    assert web.post("/events", data=event_form(token="t-forged", **{"auth[access_token]": None})).status_code == 401
    assert stored(services) == []
    # The first event the portal confirms sets the token; later ones are checked against it, no call.
    assert web.post("/events", data=event_form(token="t-first")).status_code == 200
    calls = len(responses.calls)
    assert web.post("/events", data=event_form(token="t-other", ts="2")).status_code == 401
    assert web.post("/events", data=event_form(token="t-first", ts="3")).status_code == 200
    assert len(responses.calls) == calls
    assert len(stored(services)) == 2


def test_robot_calls_are_stored_as_robot_events(services, portal_id, web):
    form = {"workflow_id": "wf1", "code": "nezabyt_distribute_deal", "document_id[0]": "crm",
            "document_id[1]": "CCrmDocumentDeal", "document_id[2]": "DEAL_123",
            "document_type[0]": "crm", "document_type[1]": "CCrmDocumentDeal", "document_type[2]": "DEAL",
            "event_token": "55c1|A5160|hsyU.47dd", "properties[pool][0]": "user_1", "use_subscription": "Y",
            "ts": "1727018926", "auth[access_token]": "robot-access-secret", "auth[refresh_token]": "robot-refresh",
            "auth[member_id]": "m-acme", "auth[application_token]": "app-token-1", "auth[domain]": "acme.bitrix24.test"}
    assert web.post("/robots/nezabyt_distribute_deal", data=form).json["status"] == "stored"
    assert web.post("/robots/nezabyt_distribute_deal", data=form).json["status"] == "duplicate"
    assert web.post("/robots/nezabyt_distribute_deal", data={**form, "auth[application_token]": "x"}).status_code == 401
    [event] = stored(services)
    assert (event.event_name, event.source, event.entity_type, event.entity_id) == (
        "ROBOT:nezabyt_distribute_deal", "robot", "deal", 123)
    assert event.payload["properties"] == {"pool": ["user_1"]}
    assert "access_token" not in event.payload["auth"] and "refresh_token" not in event.payload["auth"]


def test_uninstall_is_verified_by_the_stored_token_and_clean_purges(services, portal_id, web):
    from addon.models import Portal

    assert web.post("/events", data=event_form()).status_code == 200
    base = {"event": "ONAPPUNINSTALL", "data[LANGUAGE_ID]": "ru", "ts": "1", "auth[domain]": "acme.bitrix24.test",
            "auth[member_id]": "m-acme"}
    assert web.post("/events", data={**base, "data[CLEAN]": "1", "auth[application_token]": "forged"}).status_code == 401
    assert web.post("/events", data={**base, "data[CLEAN]": "0", "auth[application_token]": "app-token-1"}).status_code == 200
    with services.sessions() as s:
        portal = s.get(Portal, portal_id)
        assert portal.status == "uninstalled" and portal.access_token_enc is None
    # after uninstall, events are refused
    assert web.post("/events", data=event_form(ts="5")).status_code == 401
    assert web.post("/events", data={**base, "data[CLEAN]": "1", "auth[application_token]": "app-token-1"}).status_code == 200
    with services.sessions() as s:
        assert s.get(Portal, portal_id) is None
        assert s.scalar(select(func.count()).select_from(StoredEvent)) == 0


def test_healthz(services, web):
    assert web.get("/healthz").json == {"status": "ok"}


@responses.activate
def test_the_first_token_check_draws_on_the_portals_shared_budget(services, web):
    """The app.info that confirms a first token is one of the portal's requests like any other: it is
    counted in the portal's budget row, which the worker and the settings page draw on too."""
    from addon.models import PortalBudget
    from tests.install.conftest import make_portal

    portal_id = make_portal(services, application_token=None)
    responses.post("https://acme.bitrix24.test/rest/app.info.json", json={"result": {"ID": "1"}, "time": {}})
    assert web.post("/events", data=event_form(token="t-first")).status_code == 200
    with services.sessions() as s:
        assert s.get(PortalBudget, portal_id).calls == 1
