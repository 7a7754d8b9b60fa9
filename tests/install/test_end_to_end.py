"""End to end against the devportal: install, the manifest, 1,000 events, forged events, reconcile
after dropped events, token refresh mid-run, and no token in clear in the database file."""
from __future__ import annotations

import datetime as dt

import pytest
import requests
from sqlalchemy import func, select

from addon.models import Portal, PortalSettings, StoredEvent
from addon.bitrix.client import PortalClient
from addon.engine import REASON_FIELD, STATUS_FIELD
from install.manifest_apply import apply_manifest
from install.manifest_data import CRM_EVENTS, INSTALL_EVENT
from worker.reconcile import reconcile_portal

WRITES = ("event.bind", "event.unbind", "placement.bind", "placement.unbind", "crm.contact.userfield.add",
          "crm.contact.userfield.update", "crm.company.userfield.add", "crm.company.userfield.update",
          "bizproc.robot.add", "bizproc.robot.update", "bizproc.robot.delete")


def install(devportal, app_server, **kw):
    s = app_server.services.settings
    answer = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret, **kw)
    assert answer["status_code"] == 200, answer["answer"]
    return answer


def portal_row(services):
    with services.sessions() as s:
        return s.scalars(select(Portal)).one()


def count_events(services, **where):
    with services.sessions() as s:
        q = select(func.count()).select_from(StoredEvent)
        for k, v in where.items():
            q = q.where(getattr(StoredEvent, k) == v)
        return s.scalar(q)


def writes(devportal):
    return [c for c in devportal.portal.calls if c["method"] in WRITES]


def test_install_registers_exactly_the_manifest_and_a_second_install_changes_nothing(services, devportal, app_server):
    answer = install(devportal, app_server)
    assert "BX24.installFinish()" in answer["answer"]
    assert f"//{devportal.domain}/bx24.js" in answer["answer"]
    portal = portal_row(services)
    assert (portal.domain, portal.member_id, portal.status) == (devportal.domain, answer["member_id"], "active")
    assert portal.time_zone == "Europe/Moscow"  # the installing admin's profile.TIME_ZONE

    url = app_server.url
    client = PortalClient(services, portal.id)
    bound = {(r["event"], r["handler"]) for r in client.call("event.get")}
    expected = {(e, f"{url}/events") for e in CRM_EVENTS} | {("ONVOXIMPLANTCALLEND", f"{url}/events"),
                                                            (INSTALL_EVENT, f"{url}/install"),
                                                            ("ONAPPUPDATE", f"{url}/install")}
    assert bound == expected
    assert {(p["placement"], p["handler"]) for p in client.call("placement.get")} == {
        ("CRM_CONTACT_DETAIL_TAB", f"{url}/placement/crm_contact_detail_tab"),
        ("CRM_COMPANY_DETAIL_TAB", f"{url}/placement/crm_company_detail_tab")}
    fields = {f["FIELD_NAME"]: f for f in client.call("crm.contact.userfield.list")}
    status = fields[STATUS_FIELD]
    assert status["USER_TYPE_ID"] == "enumeration"
    assert [(i["XML_ID"], i["VALUE"]) for i in status["LIST"]] == [
        ("NEW", "Новый"), ("IN_WORK", "В работе"), ("HOT", "Горячий"), ("WARM", "Тёплый"), ("COLD", "Холодный"),
        ("LOST", "Пропал")]
    assert REASON_FIELD in fields
    with services.sessions() as s:
        items = s.get(PortalSettings, portal.id).field_items
    assert items["contact"] == {i["XML_ID"]: i["ID"] for i in status["LIST"]}
    assert set(items["company"]) == {"NEW", "IN_WORK", "HOT", "WARM", "COLD", "LOST"}
    robots = client.call("bizproc.robot.list")
    from addon.robots.registry import robot_definitions

    assert sorted(robots) == sorted(r["CODE"] for r in robot_definitions(url))

    before = len(writes(devportal))
    assert before >= len(expected) + 2 + 4  # the first install really wrote through REST
    install(devportal, app_server)
    assert writes(devportal)[before:] == []
    assert count_events(services) == 0
    report = apply_manifest(services, portal.id)
    assert not report.changed and report.errors == []


def test_renamed_and_added_statuses_are_pushed_to_the_field(services, devportal, app_server):
    from addon.options import Options, StatusDef
    from install.manifest_apply import sync_status_fields

    install(devportal, app_server)
    portal = portal_row(services)
    with services.sessions() as s:
        row = s.get(PortalSettings, portal.id)
        options = Options.from_dict(row.data)
        old_items = dict(row.field_items["contact"])
        statuses = list(options.statuses)
        statuses[2] = StatusDef("HOT", "Очень горячий", days=30, reasons=("Повторная покупка",))
        statuses.insert(4, StatusDef("COOL", "Прохладный", days=70))
        row.data = Options.from_dict({**options.to_dict(), "statuses": [x.to_dict() for x in statuses]}).to_dict()
        s.commit()
    report = sync_status_fields(services, portal.id)
    assert report.fields_updated
    client = PortalClient(services, portal.id)
    status = next(f for f in client.call("crm.contact.userfield.list") if f["FIELD_NAME"] == STATUS_FIELD)
    assert [(i["XML_ID"], i["VALUE"]) for i in status["LIST"]][2:5] == [
        ("HOT", "Очень горячий"), ("WARM", "Тёплый"), ("COOL", "Прохладный")]
    with services.sessions() as s:
        items = s.get(PortalSettings, portal.id).field_items
    assert items["contact"]["HOT"] == old_items["HOT"]  # renamed in place: values on contacts survive
    assert "COOL" in items["contact"] and len(items["reason_contact"]) == 1
    assert not sync_status_fields(services, portal.id).changed


def test_a_forged_install_token_is_refused(services, devportal, app_server):
    form = {"AUTH_ID": "forged", "REFRESH_ID": "forged", "member_id": "m-new", "AUTH_EXPIRES": "3600",
            "SERVER_ENDPOINT": f"{devportal.url}/rest/"}
    devportal.portal.install_app(app_server.url, "x", "y", finish=False)  # an app exists on the portal
    refused = requests.post(f"{app_server.url}/install", data=form,
                            params={"DOMAIN": devportal.domain, "PROTOCOL": "0"}, timeout=10)
    assert refused.status_code == 401
    with services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Portal).where(Portal.member_id == "m-new")) == 0


def test_api_only_install_by_onappinstall(services, devportal, app_server):
    answer = install(devportal, app_server, api_only=True)
    portal = portal_row(services)
    with services.sessions() as s:
        assert services.cipher.decrypt(s.get(Portal, portal.id).application_token_enc) == answer["application_token"]
    assert {r["event"] for r in PortalClient(services, portal.id).call("event.get")} >= set(CRM_EVENTS)


def test_a_thousand_events_are_all_stored_and_forged_ones_store_nothing(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    ids = [dp.act_add("contact", {"NAME": f"Клиент {i}"}) for i in range(500)]
    for i in ids:
        dp.act_update("contact", i, {"COMMENTS": "звонили"})
    assert dp.wait_for_deliveries(timeout=60)
    assert count_events(services, source="online") == 1000
    assert count_events(services, event_name="ONCRMCONTACTADD") == 500

    base = {"event": "ONCRMCONTACTUPDATE", "data[FIELDS][ID]": "1", "ts": "1", "auth[domain]": devportal.domain,
            "auth[member_id]": dp.member_id, "auth[application_token]": dp.app["application_token"]}
    forged = [({**base, "auth[application_token]": "wrong"}, 401),
              ({**base, "auth[member_id]": "unknown"}, 401),
              ({k: v for k, v in base.items() if k != "auth[application_token]"}, 400),
              ({k: v for k, v in base.items() if k != "data[FIELDS][ID]"}, 400),
              ({k: v for k, v in base.items() if k != "event"}, 400)]
    for form, status in forged:
        assert requests.post(f"{app_server.url}/events", data=form, timeout=10).status_code == status
    assert count_events(services) == 1000


def test_after_dropped_events_one_reconcile_pass_stores_every_change_exactly_once(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    dp.set_faults(drop_events=0.3)
    contacts = [dp.act_add("contact", {"NAME": f"Клиент {i}"}) for i in range(120)]
    companies = [dp.act_add("company", {"TITLE": f"ООО {i}"}) for i in range(40)]
    dp.advance(minutes=1)
    for i in contacts[:60]:
        dp.act_update("contact", i, {"COMMENTS": "обновлён"})
    calls = [dp.act_call("contact", i, user_id=1) for i in contacts[:30]]
    assert dp.wait_for_deliveries(timeout=60)
    dp.set_faults(drop_events=0.0)
    online = count_events(services, source="online")
    assert online < 120 + 40 + 60 + 30  # some were really dropped

    portal_id = portal_row(services).id
    report = reconcile_portal(services, portal_id, now=dp.now())
    assert report.stored_total > 0

    # the latest change of every contact, company and call, by the portal's own clock
    client = PortalClient(services, portal_id)
    latest = {}
    for entity_type in ("contact", "company"):
        for row in client.list_all(f"crm.{entity_type}.list", select=["ID", "DATE_MODIFY"]):
            latest[(entity_type, int(row["ID"]))] = _unix(row["DATE_MODIFY"])
    for row in client.list_all("crm.activity.list", select=["ID", "LAST_UPDATED"]):
        latest[("activity", int(row["ID"]))] = _unix(row["LAST_UPDATED"])
    assert {("contact", i) for i in contacts} | {("company", i) for i in companies} | {("activity", i) for i in calls} \
        <= set(latest)
    with services.sessions() as s:
        rows = s.execute(select(StoredEvent.entity_type, StoredEvent.entity_id, StoredEvent.source,
                                StoredEvent.payload)).all()
    for key, modified in latest.items():
        covering = [src for t, i, src, payload in rows if (t, i) == key and int(payload["ts"]) >= modified]
        assert len(covering) == 1, (key, covering)  # stored, and exactly once

    # a second pass finds nothing new
    again = reconcile_portal(services, portal_id, now=dp.now())
    assert again.stored_total == 0
    assert count_events(services, source="reconcile") == report.stored_total

    # later changes whose events are all lost are found by the next pass, and only they
    assert again.entity_watermark >= report.entity_watermark
    dp.advance(minutes=20)
    dp.set_faults(drop_events=1.0)
    dp.act_update("company", companies[0], {"TITLE": "ООО Новое"})
    dp.act_call("company", companies[0], user_id=1)
    assert dp.wait_for_deliveries(timeout=10)
    later = reconcile_portal(services, portal_id, now=dp.now())
    assert later.stored == {"company": 1, "activity": 1}
    assert later.entity_watermark > again.entity_watermark


def _unix(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp())


def used_refresh_tokens(dp) -> int:
    return sum(1 for info in dp.refresh_tokens.values() if info["used"])


def test_an_expired_token_mid_run_is_refreshed_once_and_the_run_continues(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    ids = [dp.act_add("contact", {"NAME": f"Клиент {i}"}, ) for i in range(120)]
    portal_id = portal_row(services).id
    client = PortalClient(services, portal_id)
    first = client.get_many("crm.contact.get", ids[:60])
    dp.expire_tokens()
    second = client.get_many("crm.contact.get", ids[60:])
    dp.expire_tokens()
    rows = list(client.list_all("crm.contact.list", select=["ID"]))
    assert all(isinstance(v, dict) for v in {**first, **second}.values())
    assert len(rows) == 120
    assert client.stats.refreshes == 2
    assert used_refresh_tokens(dp) == 2


def test_batch_keeps_each_result_and_error_over_fifty_commands(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    ids = [dp.act_add("contact", {"NAME": f"Клиент {i}"}) for i in range(70)]
    client = PortalClient(services, portal_row(services).id)
    commands = {f"c{i}": ("crm.contact.update", {"id": i, "fields": {"COMMENTS": f"#{i}"}}) for i in ids}
    commands["missing"] = ("crm.contact.get", {"id": 999999})
    answer = client.batch(commands)
    assert set(answer.results) == {f"c{i}" for i in ids}
    assert set(answer.errors) == {"missing"} and answer.errors["missing"].description == "Not found"
    assert client.stats.batches == 2
    assert dp.get_record("contact", ids[-1])["COMMENTS"] == f"#{ids[-1]}"


def test_a_dead_refresh_token_marks_the_portal_and_stops(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    with services.sessions() as s:
        portal = s.scalars(select(Portal)).one()
        refresh_token = services.cipher.decrypt(portal.refresh_token_enc)
    dp.refresh_tokens[refresh_token]["used"] = True  # burnt elsewhere
    dp.expire_tokens()
    from addon.bitrix.errors import PortalAuthError

    with pytest.raises(PortalAuthError):
        PortalClient(services, portal.id).call("profile")
    assert portal_row(services).status == "needs_reauth"


def test_no_token_in_clear_in_the_database(services, devportal, app_server):
    from addon.models import Base

    answer = install(devportal, app_server)
    dp = devportal.portal
    contact = dp.act_add("contact", {"NAME": "Клиент"})
    deal = dp.act_add("deal", {"TITLE": "Сделка"})
    robot = next(code for code in dp.robots if code.endswith("_deal"))  # a deal robot: FILTER shows it on deals
    dp.run_robot(robot, "deal", deal, {})  # robot calls carry access and refresh tokens
    assert dp.wait_for_deliveries(timeout=10)
    dp.expire_tokens()
    PortalClient(services, portal_row(services).id).call("crm.contact.get", {"id": contact})
    assert count_events(services, source="robot") == 1 and count_events(services, source="online") >= 2
    with services.sessions() as s:
        portal = s.scalars(select(Portal)).one()
        current = [services.cipher.decrypt(portal.access_token_enc), services.cipher.decrypt(portal.refresh_token_enc)]
        # every row of every table, as the database returns it
        dump = repr([s.execute(table.select()).all() for table in Base.metadata.sorted_tables]).encode()
    secrets = [answer["access_token"], answer["refresh_token"], answer["application_token"], *current,
               *dp.access_tokens, *dp.refresh_tokens]
    assert dp.member_id.encode() in dump  # the dump really holds the portal's rows
    blob = dump
    if services.settings.is_sqlite:  # and the file itself, write-ahead log included
        services.engine.dispose()
        path = services.settings.database_url.removeprefix("sqlite:///")
        for suffix in ("", "-wal"):
            try:
                with open(path + suffix, "rb") as f:
                    blob += f.read()
            except FileNotFoundError:
                pass
    for secret in secrets:
        assert secret.encode() not in blob, "a token is stored in clear"


def test_a_non_admin_cannot_install(services, devportal, app_server):
    dp = devportal.portal
    s = services.settings
    dp.install_app(app_server.url, s.client_id, s.client_secret, finish=False)
    with services.sessions() as session:
        for portal in session.scalars(select(Portal)):
            session.delete(portal)
        session.commit()
    manager = dp.add_user("Иван", "Петров")
    answer = requests.post(f"{app_server.url}/install", params=dp.page_query(),
                           data=dp.page_form(dp.issue_tokens(manager), "DEFAULT", {}), timeout=10)
    assert answer.status_code == 403
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Portal)) == 0


def test_uninstall_then_reinstall(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    forged = {"event": "ONAPPUNINSTALL", "data[CLEAN]": "1", "auth[member_id]": dp.member_id,
              "auth[domain]": devportal.domain, "auth[application_token]": "guessed"}
    # no event has taught us the application_token yet: the portal itself says the app is installed
    assert requests.post(f"{app_server.url}/events", data=forged, timeout=10).status_code == 401
    assert portal_row(services).status == "active"
    assert dp.uninstall_app(clean=False) == 1
    assert dp.wait_for_deliveries(timeout=10)
    portal = portal_row(services)
    assert portal.status == "uninstalled" and portal.access_token_enc is None
    with pytest.raises(Exception):
        PortalClient(services, portal.id).call("profile")

    install(devportal, app_server)  # a new installation: new tokens, new application_token
    assert portal_row(services).status == "active"
    contact = dp.act_add("contact", {"NAME": "Клиент"})
    assert dp.wait_for_deliveries(timeout=10)
    assert count_events(services, entity_id=contact, source="online") == 1

    assert dp.uninstall_app(clean=True) == 1
    assert dp.wait_for_deliveries(timeout=10)
    with services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Portal)) == 0
        assert s.scalar(select(func.count()).select_from(StoredEvent)) == 0


def test_the_pace_keeps_a_job_under_the_portals_bucket(services, devportal, app_server):
    import dataclasses

    from addon.bitrix.bucket import _paces

    install(devportal, app_server)
    dp = devportal.portal
    # A small bucket so the test is quick: the portal allows 6 at once and 20/s; we allow 5 and 18/s.
    dp.set_limits(rps=20, burst=6, enabled=True)
    services.settings = dataclasses.replace(services.settings, portal_rps=18.0, portal_burst=5)
    _paces.clear()
    client = PortalClient(services, portal_row(services).id, sleep=lambda s: pytest.fail("no 503 expected"))
    start = len(dp.calls)
    for _ in range(40):
        client.call("profile")
    assert client.stats.retries_503 == 0
    assert [c["status"] for c in dp.calls[start:]] == [200] * 40


def test_a_503_storm_is_ridden_out_by_calls_and_batches(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    sleeps = []
    client = PortalClient(services, portal_row(services).id, sleep=sleeps.append)
    dp.set_faults(fail_next=2, fail_status=503)
    assert client.call("profile")["ID"] == "1"
    assert sleeps == [0.5, 1.0]
    ids = [dp.act_add("contact", {"NAME": f"Клиент {i}"}) for i in range(3)]
    dp.set_faults(fail_next=1, fail_status=503)
    answer = client.get_many("crm.contact.get", ids)
    assert all(isinstance(answer[i], dict) for i in ids)


def test_operation_time_limit_parks_only_that_method(services, devportal, app_server):
    from addon.bitrix.errors import MethodParked

    install(devportal, app_server)
    dp = devportal.portal
    dp.set_method_cost("crm.contact.list", 500)  # one call spends the whole 10-minute budget
    portal_id = portal_row(services).id
    client = PortalClient(services, portal_id)
    client.call("crm.contact.list", {"start": -1})
    with pytest.raises(MethodParked) as info:
        client.call("crm.contact.list", {"start": -1})
    assert info.value.until > dp.ts()
    sent = len(dp.calls)
    with pytest.raises(MethodParked):
        PortalClient(services, portal_id).call("crm.contact.list")  # parked for every client, no request
    assert len(dp.calls) == sent
    assert client.call("crm.company.list", {"start": -1}) == []
    answer = client.batch({"a": ("crm.contact.list", {}), "b": ("crm.company.list", {})})
    assert isinstance(answer.errors["a"], MethodParked) and answer.results["b"] == []
