"""CRM lists, filters, select, user fields (enumerations), multi-fields and duplicate search."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.devportal.conftest import rest

MSK = ZoneInfo("Europe/Moscow")


@pytest.fixture
def crm_portal(installed):
    srv, answer, peer = installed
    srv.portal.set_clock(datetime(2025, 5, 1, 12, 0, tzinfo=MSK), frozen=True)
    for i in range(1, 131):
        srv.portal.add_record("contact", {"NAME": f"Имя{i}", "LAST_NAME": "Сидоров" if i % 2 else "Кротов",
                                          "ASSIGNED_BY_ID": 1 + i % 3,
                                          "PHONE": [{"VALUE": f"+7 (900) 000-{i:04d}", "VALUE_TYPE": "WORK"}]},
                              when=srv.portal.now() - timedelta(days=200 - i), fire=False)
    return srv, answer["access_token"]


# doc: settings/how-to-call-rest-api/list-methods-pecularities.md
def test_paging_50_floor_and_minus_one(crm_portal):
    srv, token = crm_portal
    first = rest(srv, "crm.contact.list", token, order={"ID": "ASC"}).json()
    assert len(first["result"]) == 50 and first["total"] == 130 and first["next"] == 50
    floored = rest(srv, "crm.contact.list", token, order={"ID": "ASC"}, start=30).json()
    assert floored["result"][0]["ID"] == "1" and floored["next"] == 50
    last = rest(srv, "crm.contact.list", token, order={"ID": "ASC"}, start=100).json()
    assert len(last["result"]) == 30 and "next" not in last and last["total"] == 130
    fast = rest(srv, "crm.contact.list", token, order={"ID": "ASC"}, filter={">ID": 120}, start=-1).json()
    assert [r["ID"] for r in fast["result"]] == [str(i) for i in range(121, 131)]
    assert fast["total"] == 0 and "next" not in fast


# doc: api-reference/crm/contacts/crm-contact-list.md
def test_filter_prefixes_order_and_select(crm_portal):
    srv, token = crm_portal

    def ids(**params):
        return [int(r["ID"]) for r in rest(srv, "crm.contact.list", token, **params).json()["result"]]

    assert ids(filter={">=ID": 128}) == [128, 129, 130]
    assert ids(filter={"<ID": 3}) == [1, 2]
    assert ids(filter={"@ID": [5, 7, 300]}) == [5, 7]
    assert len(ids(filter={"!@ID": list(range(1, 121))})) == 10
    assert ids(filter={"%NAME": "мя12", "<=ID": 125}) == [12, 120, 121, 122, 123, 124, 125]
    assert ids(filter={"!LAST_NAME": "Сидоров", "<ID": 7}) == [2, 4, 6]
    assert ids(filter={"=ASSIGNED_BY_ID": 2, "<ID": 10}) == [1, 4, 7]
    cut = datetime(2025, 5, 1, 12, 0, tzinfo=MSK) - timedelta(days=72)
    assert ids(filter={">DATE_CREATE": cut.isoformat()}, order={"ID": "ASC"}, start=-1)[:2] == [129, 130]
    assert ids(filter={"PHONE": "+7 (900) 000-0042"}) == [42]
    assert ids(order={"ID": "DESC"})[:2] == [130, 129]
    assert ids(order={"LAST_NAME": "ASC", "ID": "DESC"})[:2] == [130, 128]
    row = rest(srv, "crm.contact.list", token, select=["*"], filter={"ID": 1}).json()["result"][0]
    assert "PHONE" not in row and row["NAME"] == "Имя1"
    row = rest(srv, "crm.contact.list", token, select=["ID", "PHONE"], filter={"ID": 1}).json()["result"][0]
    assert set(row) == {"ID", "PHONE"} and row["PHONE"][0]["TYPE_ID"] == "PHONE"


# doc: api-reference/crm/contacts/userfield/crm-contact-userfield-add.md ; crm-contact-userfield-update.md
def test_enumeration_user_field_items_and_values(crm_portal):
    srv, token = crm_portal
    uf_id = rest(srv, "crm.contact.userfield.add", token, fields={
        "FIELD_NAME": "NEZABYT_STATUS", "USER_TYPE_ID": "enumeration", "LABEL": "Статус клиента",
        "LIST": [{"VALUE": "Новый", "XML_ID": "NEW", "SORT": 10}, {"VALUE": "Горячий", "XML_ID": "HOT", "SORT": 20}],
    }).json()["result"]
    assert isinstance(uf_id, int)
    listed = rest(srv, "crm.contact.userfield.list", token, filter={"FIELD_NAME": "UF_CRM_NEZABYT_STATUS"}).json()
    field = listed["result"][0]
    assert field["ENTITY_ID"] == "CRM_CONTACT" and field["USER_TYPE_ID"] == "enumeration"
    items = {i["XML_ID"]: i for i in field["LIST"]}
    assert set(items["NEW"]) == {"ID", "SORT", "VALUE", "DEF", "XML_ID"}
    new_id, hot_id = items["NEW"]["ID"], items["HOT"]["ID"]
    described = rest(srv, "crm.contact.fields", token).json()["result"]["UF_CRM_NEZABYT_STATUS"]
    assert described["type"] == "enumeration" and described["isDynamic"] is True
    assert described["items"] == [{"ID": new_id, "VALUE": "Новый"}, {"ID": hot_id, "VALUE": "Горячий"}]
    rest(srv, "crm.contact.update", token, id=3, fields={"UF_CRM_NEZABYT_STATUS": hot_id})
    got = rest(srv, "crm.contact.get", token, id=3).json()["result"]
    assert got["UF_CRM_NEZABYT_STATUS"] == hot_id
    in_star = rest(srv, "crm.contact.list", token, filter={"UF_CRM_NEZABYT_STATUS": hot_id}).json()["result"]
    assert [r["ID"] for r in in_star] == ["3"] and in_star[0]["UF_CRM_NEZABYT_STATUS"] == hot_id
    # rename one item, delete another, add a new one
    rest(srv, "crm.contact.userfield.update", token, id=uf_id, fields={"LIST": [
        {"ID": new_id, "VALUE": "Свежий"}, {"ID": hot_id, "DEL": "Y"}, {"VALUE": "Пропал", "XML_ID": "LOST"}]})
    items = rest(srv, "crm.contact.userfield.get", token, id=uf_id).json()["result"]["LIST"]
    assert [(i["VALUE"], i["XML_ID"]) for i in items] == [("Свежий", "NEW"), ("Пропал", "LOST")]
    assert rest(srv, "crm.contact.get", token, id=3).json()["result"]["UF_CRM_NEZABYT_STATUS"] is None


# doc: tutorials/crm/how-to-edit-crm-objects/how-to-change-email-or-phone.md
def test_phone_multifield_update_semantics(crm_portal):
    srv, token = crm_portal
    cid = rest(srv, "crm.contact.add", token, fields={"NAME": "Мульти", "PHONE": [
        {"VALUE": "111", "VALUE_TYPE": "WORK"}, {"VALUE": "222", "VALUE_TYPE": "MOBILE"},
        {"VALUE": "333", "VALUE_TYPE": "HOME"}], "EMAIL": [{"VALUE": "a@b.ru"}]}).json()["result"]
    phones = rest(srv, "crm.contact.get", token, id=cid).json()["result"]["PHONE"]
    p1, p2, p3 = (p["ID"] for p in phones)
    rest(srv, "crm.contact.update", token, id=cid, fields={"PHONE": [
        {"ID": p1, "VALUE": "111-1", "VALUE_TYPE": "WORK"}, {"ID": p2, "DELETE": "Y"}, {"VALUE": "444"}]})
    phones = rest(srv, "crm.contact.get", token, id=cid).json()["result"]["PHONE"]
    assert [(p["ID"], p["VALUE"]) for p in phones][:2] == [(p1, "111-1"), (p3, "333")]
    assert phones[2]["VALUE"] == "444" and phones[2]["VALUE_TYPE"] == "WORK"
    rest(srv, "crm.contact.update", token, id=cid, fields={"PHONE": [{"ID": p3, "VALUE": ""}]})
    got = rest(srv, "crm.contact.get", token, id=cid).json()["result"]
    assert [p["VALUE"] for p in got["PHONE"]] == ["111-1", "444"] and got["EMAIL"][0]["VALUE"] == "a@b.ru"
    assert got["HAS_PHONE"] == "Y" and got["HAS_EMAIL"] == "Y"


# doc: api-reference/crm/duplicates/crm-duplicate-find-by-comm.md
def test_duplicate_findbycomm_normalises_and_returns_integers(crm_portal):
    srv, token = crm_portal
    found = rest(srv, "crm.duplicate.findbycomm", token, type="PHONE",
                 values=["89000000042", "+7 900 000 00 43"]).json()["result"]
    assert found == {"CONTACT": [42, 43]}
    none = rest(srv, "crm.duplicate.findbycomm", token, type="PHONE", values=["+7 111 111 11 11"]).json()
    assert none["result"] == []
    only = rest(srv, "crm.duplicate.findbycomm", token, type="PHONE", values=["89000000042"],
                entity_type="COMPANY").json()["result"]
    assert only == []


def test_deal_stage_semantics_and_activity_calls(crm_portal):
    srv, token = crm_portal
    portal = srv.portal
    deal = rest(srv, "crm.deal.add", token, fields={"TITLE": "Кухня", "CONTACT_ID": 5}).json()["result"]
    got = rest(srv, "crm.deal.get", token, id=deal).json()["result"]
    assert got["STAGE_ID"] == "NEW" and got["STAGE_SEMANTIC_ID"] == "P" and got["CLOSED"] == "N"
    portal.act_close_deal(deal, won=True)
    got = rest(srv, "crm.deal.get", token, id=deal).json()["result"]
    assert got["STAGE_ID"] == "WON" and got["STAGE_SEMANTIC_ID"] == "S" and got["CLOSED"] == "Y"
    stages = rest(srv, "crm.status.list", token, filter={"ENTITY_ID": "DEAL_STAGE"}).json()["result"]
    assert [s["STATUS_ID"] for s in stages if s["EXTRA"]["SEMANTICS"] == "failure"] == ["LOSE", "APOLOGY"]
    aid = portal.act_call("contact", 5, user_id=2, direction=1)
    rows = rest(srv, "crm.activity.list", token, filter={"TYPE_ID": 2, "OWNER_TYPE_ID": 3, "OWNER_ID": 5},
                select=["*", "COMMUNICATIONS"]).json()["result"]
    assert [r["ID"] for r in rows] == [str(aid)]
    call = rows[0]
    assert call["TYPE_ID"] == "2" and call["DIRECTION"] == "1" and call["COMPLETED"] == "Y"
    assert call["PROVIDER_ID"] == "VOXIMPLANT_CALL" and call["RESPONSIBLE_ID"] == "2"
    assert call["START_TIME"] == "2025-05-01T12:00:00+03:00" and call["COMMUNICATIONS"][0]["TYPE"] == "PHONE"
    by_binding = rest(srv, "crm.activity.list", token, filter={"BINDINGS": [{"OWNER_TYPE_ID": 3, "OWNER_ID": 5}]})
    assert [r["ID"] for r in by_binding.json()["result"]] == [str(aid)]
    assert rest(srv, "crm.activity.get", token, id=aid).json()["result"]["OWNER_ID"] == "5"


# doc: api-reference/crm/timeline/activities/activity-base/crm-activity-get.md (no BINDINGS in the answer),
# api-reference/crm/timeline/activities/binding/crm-activity-binding-list.md
def test_activity_bindings_come_from_binding_list_only(crm_portal):
    srv, token = crm_portal
    portal = srv.portal
    company = portal.act_add("company", {"TITLE": "ООО Ромашка"})
    aid = portal.act_call("contact", 5, user_id=2, also=(("company", company),))
    got = rest(srv, "crm.activity.get", token, id=aid).json()["result"]
    assert "BINDINGS" not in got and got["COMMUNICATIONS"][0]["TYPE"] == "PHONE"
    listed = rest(srv, "crm.activity.list", token, filter={"ID": aid}, select=["*"]).json()["result"]
    assert listed and "BINDINGS" not in listed[0]
    bound = rest(srv, "crm.activity.binding.list", token, activityId=aid).json()["result"]
    assert bound == [{"entityTypeId": 3, "entityId": 5}, {"entityTypeId": 4, "entityId": company}]
    missing = rest(srv, "crm.activity.binding.list", token, activityId=99999)
    assert missing.status_code == 400 and missing.json()["error"] == "NOT_FOUND"
    assert rest(srv, "crm.activity.binding.list", token).json()["error"] == "100"
    # filter[BINDINGS] may name an owner type alone.
    by_type = rest(srv, "crm.activity.list", token, filter={"BINDINGS": [{"OWNER_TYPE_ID": 4}]}).json()["result"]
    assert [r["ID"] for r in by_type] == [str(aid)]


# doc: api-reference/crm/crm-stage-history-list.md
def test_stage_history_records_creation_and_moves(crm_portal):
    srv, token = crm_portal
    deal = srv.portal.act_add("deal", {"TITLE": "История"})
    srv.portal.act_move_stage("deal", deal, "EXECUTING")
    srv.portal.act_close_deal(deal, won=False)
    body = rest(srv, "crm.stagehistory.list", token, entityTypeId=2, order={"ID": "DESC"},
                filter={"OWNER_ID": deal}).json()
    items = body["result"]["items"]
    assert body["total"] == 3
    assert [(i["TYPE_ID"], i["STAGE_ID"], i["STAGE_SEMANTIC_ID"]) for i in items] == [
        (3, "LOSE", "F"), (2, "EXECUTING", "P"), (1, "NEW", "P")]
    assert items[0]["OWNER_ID"] == deal and isinstance(items[0]["ID"], int) and items[0]["CATEGORY_ID"] == 0
    assert rest(srv, "crm.stagehistory.list", token, entityTypeId=3).json()["error"] == "ENTITY_TYPE_NOT_SUPPORTED"


# doc: api-reference/crm/universal/crm-item-list.md ; crm-item-update.md ; crm-item-get.md
def test_crm_item_methods_use_camel_case_and_fm(crm_portal):
    srv, token = crm_portal
    listed = rest(srv, "crm.item.list", token, entityTypeId=3, select=["*"], filter={">id": 125},
                  order={"id": "ASC"}).json()
    items = listed["result"]["items"]
    assert [i["id"] for i in items] == [126, 127, 128, 129, 130] and listed["total"] == 5
    assert items[0]["assignedById"] and items[0]["updatedTime"] and items[0]["fm"][0]["typeId"] == "PHONE"
    offset = rest(srv, "crm.item.list", token, entityTypeId=3, start=30, select=["id"]).json()
    assert offset["result"]["items"][0] == {"id": 31}  # ORM lists page from the exact offset
    before = srv.portal.records["contact"][5]["DATE_MODIFY"]
    srv.portal.advance(hours=1)
    same = rest(srv, "crm.item.update", token, entityTypeId=3, id=5, fields={"name": "Имя5"}).json()
    assert same["result"]["item"]["name"] == "Имя5"
    assert srv.portal.records["contact"][5]["DATE_MODIFY"] == before  # nothing changed: no save
    changed = rest(srv, "crm.item.update", token, entityTypeId=3, id=5,
                   fields={"name": "Пятый", "fm": {"n0": {"typeId": "EMAIL", "valueType": "WORK", "value": "5@x.ru"}}})
    item = changed.json()["result"]["item"]
    assert item["name"] == "Пятый" and {f["value"] for f in item["fm"]} == {"+7 (900) 000-0005", "5@x.ru"}
    assert srv.portal.records["contact"][5]["DATE_MODIFY"] != before
    missing = rest(srv, "crm.item.get", token, entityTypeId=3, id=999)
    assert missing.status_code == 400 and missing.json()["error"] == "NOT_FOUND"


# doc: api-reference/telephony/voximplant/voximplant-statistic-get.md ; events/on-voximplant-call-end.md
def test_call_statistics_and_call_end_event(crm_portal, app_peer):
    srv, token = crm_portal
    rest(srv, "event.bind", token, event="ONVOXIMPLANTCALLEND", handler=f"{app_peer.url}/events")
    aid = srv.portal.act_call("contact", 7, user_id=1, direction=2, completed=False)
    assert srv.portal.wait_for_deliveries()
    form = app_peer.posts("/events")[-1]
    assert form["event"] == "ONVOXIMPLANTCALLEND" and form["data[CALL_TYPE]"] == "1"  # outgoing
    assert form["data[CRM_ACTIVITY_ID]"] == str(aid) and form["data[CALL_FAILED_CODE]"] == "304"
    assert "data[CRM_ENTITY_ID]" not in form  # the event names no CRM entity
    rows = rest(srv, "voximplant.statistic.get", token, FILTER={"CALL_ID": form["data[CALL_ID]"]}).json()
    assert rows["total"] == 1
    row = rows["result"][0]
    assert row["CRM_ENTITY_TYPE"] == "CONTACT" and row["CRM_ENTITY_ID"] == "7"
    assert row["CRM_ACTIVITY_ID"] == str(aid)


def test_id_window_fast_path_matches_a_plain_scan():
    import random

    from devportal.crm import SCHEMAS, compile_filter, list_page

    rng = random.Random(5)
    tz = ZoneInfo("Europe/Moscow")
    by_id = {i: {"ID": str(i), "ASSIGNED_BY_ID": str(rng.randint(1, 4)), "NAME": rng.choice(["А", "Б"])}
             for i in range(1, 400) if rng.random() < 0.8}
    for _ in range(60):
        flt = {rng.choice([">ID", ">=ID"]): rng.choice([0, 17, 17.5, 250, 399, "120"])}
        if rng.random() < 0.5:
            flt["ASSIGNED_BY_ID"] = rng.randint(1, 4)
        fast, total, nxt = list_page(by_id, flt, {"ID": "ASC"}, -1, SCHEMAS["contact"], tz)
        pred = compile_filter(flt, SCHEMAS["contact"], tz)
        plain = [r for r in by_id.values() if pred(r)][:50]
        assert fast == plain and total is None and nxt is None
