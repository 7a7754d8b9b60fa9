"""Hostile input at the portal's receivers (/events, /robots/<code>): deep PHP-bracket keys,
numbers past the columns' range, over-long event names and dedupe keys, unknown robot codes.
Each is a clear 4xx with nothing stored, through the fast path and through the Flask route."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from addon.ids import MAX_ID, parse_id
from addon.intake import DEDUPE_KEY_LENGTH, EventIntake, parse_php_form
from addon.models import StoredEvent
from addon.web import create_app
from tests.install.conftest import make_portal
from tests.install.test_intake import event_form, stored

DEEP_KEY = "auth" + "[a]" * 1000
HUGE = "1" * 35  # a 35-digit "ID"


@pytest.fixture
def portal_id(services) -> int:
    return make_portal(services)


@pytest.fixture
def web(services):
    return create_app(services).test_client()


def as_multipart(form: dict) -> dict:
    """The same fields sent as multipart/form-data: _EventsFirst hands these on to the Flask route."""
    return dict(data=form, content_type="multipart/form-data")


def robot_form(**extra):
    form = {"workflow_id": "wf1", "code": "nezabyt_distribute_deal", "document_id[0]": "crm",
            "document_id[1]": "CCrmDocumentDeal", "document_id[2]": "DEAL_123", "event_token": "55c1|A5160|hsyU",
            "auth[member_id]": "m-acme", "auth[application_token]": "app-token-1",
            "auth[domain]": "acme.bitrix24.test"}
    form.update(extra)
    return form


def test_the_nesting_depth_is_bounded_like_phps():
    assert parse_php_form([("a" + "[b]" * 64, "x")])["a"]["b"]["b"] is not None  # PHP's own limit passes
    with pytest.raises(ValueError, match="deeper than 64"):
        parse_php_form([("a" + "[b]" * 65, "x")])
    with pytest.raises(ValueError):
        parse_php_form([(DEEP_KEY, "x")])


@pytest.mark.parametrize("multipart", [False, True], ids=["fast path", "flask route"])
def test_a_key_1000_levels_deep_is_a_400_not_a_traceback(services, portal_id, web, multipart):
    form = event_form(**{DEEP_KEY: "x"})
    answer = web.post("/events", **(as_multipart(form) if multipart else {"data": form}))
    assert answer.status_code == 400
    assert answer.json["error"] == "bad_request" and "64" in answer.json["error_description"]
    assert stored(services) == []


def test_a_robot_call_1000_levels_deep_is_a_400(services, portal_id, web):
    answer = web.post("/robots/nezabyt_distribute_deal", data=robot_form(**{DEEP_KEY: "x"}))
    assert answer.status_code == 400 and stored(services) == []


def test_parse_id_keeps_ids_within_the_columns():
    assert [parse_id(v) for v in ("42", 42, " 7 ", str(MAX_ID))] == [42, 42, 7, MAX_ID]
    assert [parse_id(v) for v in (str(MAX_ID + 1), HUGE, "0", "-3", "4.2", "²", "", None, True, [], "9" * 5000)] \
        == [None] * 11


@pytest.mark.parametrize("multipart", [False, True], ids=["fast path", "flask route"])
def test_an_entity_id_past_the_columns_range_is_a_400(services, portal_id, web, multipart):
    form = event_form(entity_id=HUGE)
    answer = web.post("/events", **(as_multipart(form) if multipart else {"data": form}))
    assert answer.status_code == 400 and "data[FIELDS][ID]" in answer.json["error_description"]
    forged = web.post("/events", data=event_form(entity_id=HUGE, token="forged"))
    assert forged.status_code == 401  # forged is told as forged first
    assert stored(services) == []


def test_a_call_id_past_the_range_is_stored_without_an_entity(services, portal_id, web):
    # ONVOXIMPLANTCALLEND names its activity, if at all, in data[CRM_ACTIVITY_ID]: not required.
    form = event_form(event="ONVOXIMPLANTCALLEND", entity_id=None, **{"data[CRM_ACTIVITY_ID]": HUGE})
    assert web.post("/events", data=form).status_code == 200
    [event] = stored(services)
    assert (event.entity_type, event.entity_id) == ("call", None)


def test_a_robot_document_id_past_the_range_is_a_400(services, portal_id, web):
    answer = web.post("/robots/nezabyt_distribute_deal", data=robot_form(**{"document_id[2]": f"DEAL_{HUGE}"}))
    assert answer.status_code == 400 and answer.json["error_description"] == "bad document_id"
    assert web.post("/robots/nezabyt_distribute_deal",
                    data=robot_form(**{"document_id[2]": f"DEAL_{HUGE}",
                                       "auth[application_token]": "forged"})).status_code == 401
    assert stored(services) == []


@pytest.mark.parametrize("multipart", [False, True], ids=["fast path", "flask route"])
def test_an_event_name_over_64_characters_is_refused(services, portal_id, web, multipart):
    form = event_form(event="ONCRMCONTACTUPDATE" + "X" * 47)  # 65 characters
    answer = web.post("/events", **(as_multipart(form) if multipart else {"data": form}))
    assert answer.status_code == 400 and "64" in answer.json["error_description"]
    assert stored(services) == []
    assert web.post("/events", data=event_form(event="ONCRMCONTACTUPDATE" + "X" * 46)).status_code == 200


def test_two_long_dedupe_keys_sharing_their_first_255_characters_are_both_stored(services, portal_id):
    intake = EventIntake(services.intake_engine, services.cipher)
    shared = "1727018926" + "0" * 300
    first = parse_php_form(event_form(ts=shared + "1").items())
    second = parse_php_form(event_form(ts=shared + "2").items())
    a, b = intake.store_event(first), intake.store_event(second)
    assert not a.duplicate and not b.duplicate and a.event_id != b.event_id
    assert intake.store_event(first).duplicate  # the same long key is still the same change
    with services.sessions() as s:
        keys = s.scalars(select(StoredEvent.dedupe_key).order_by(StoredEvent.id)).all()
    assert len(keys) == 2 and keys[0] != keys[1]
    assert all(len(k) <= DEDUPE_KEY_LENGTH for k in keys)
    assert keys[0][:100] == f"ONCRMCONTACTUPDATE:42:{shared}"[:100]  # still readable


def test_an_unknown_robot_code_is_a_404_and_stores_nothing(services, portal_id, web):
    for code in ("nz_distribute_deal", "nezabyt_distribute_contact", "nezabyt_nothing_deal", "x" * 70):
        answer = web.post(f"/robots/{code}", data=robot_form(code=code))
        assert answer.status_code == 404, code
        assert answer.json["error"] == "not_found"
    assert stored(services) == []
    assert web.post("/robots/nezabyt_distribute_deal", data=robot_form()).json["status"] == "stored"


@pytest.mark.parametrize("length", ["9" * 5000, "١٢"])
def test_a_content_length_that_is_no_length_goes_to_flask_and_is_refused(services, portal_id, web, length):
    answer = web.post("/events", data=event_form(), environ_overrides={"CONTENT_LENGTH": length})
    assert answer.status_code in (400, 413) and stored(services) == []
