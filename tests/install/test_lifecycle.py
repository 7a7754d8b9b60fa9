"""Install → re-install → update → uninstall against the devportal at the real limit (2 req/s,
burst 50), with the REST calls each step costs; ONAPPUPDATE; enumeration items whose XML_ID the
portal chose itself; the zone name; a scope separated by spaces."""
from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from addon.bitrix.client import PortalClient
from addon.models import Portal, PortalSettings, TrackedEntity
from addon.options import Options, StatusDef
from addon.engine import REASON_FIELD, STATUS_FIELD
from install.manifest_apply import apply_manifest, sync_status_fields
from install.manifest_data import desired_events
from tests.devportal.conftest import rest
from tests.factories import make_tracked

# The goals of the install section of the README (the figures it prints come from this test's run).
INSTALL_CALLS, REINSTALL_CALLS = 15, 5


def rest_calls(dp, start: int) -> Counter:
    """The HTTP REST requests since `start` (a batch is one, whatever it carries)."""
    return Counter(c["method"] for c in dp.calls[start:] if not c["in_batch"])


def portal_row(services) -> Portal:
    with services.sessions() as s:
        return s.scalars(select(Portal)).one()


def bound_events(services, portal_id) -> set[str]:
    with PortalClient(services, portal_id) as client:
        return {r["event"] for r in client.call("event.get")}


def test_install_reinstall_update_uninstall_back_to_back_at_the_real_limit(services, devportal, app_server, capsys):
    dp = devportal.portal
    dp.set_limits(rps=2, burst=50, enabled=True)
    s = services.settings
    costs = {}

    start = len(dp.calls)
    first = dp.install_app(app_server.url, s.client_id, s.client_secret)  # the page, then ONAPPINSTALL
    assert first["status_code"] == 200, first["answer"]
    costs["install"] = rest_calls(dp, start)
    portal = portal_row(services)
    assert portal.status == "active" and portal.app_version == "1" and portal.manifest_key.startswith("1:")
    assert services.cipher.decrypt(portal.application_token_enc) == first["application_token"]
    # The admin's settings and a tracked client, which nothing below may lose.
    with services.sessions() as session:
        row = session.get(PortalSettings, portal.id)
        row.data = {**row.data, "notify_time": "07:30"}
        make_tracked(session, portal.id, 5, "HOT")
        session.commit()

    start = len(dp.calls)
    again = dp.install_app(app_server.url, s.client_id, s.client_secret)
    assert again["status_code"] == 200, again["answer"]
    costs["re-install"] = rest_calls(dp, start)
    assert services.cipher.decrypt(portal_row(services).application_token_enc) == again["application_token"]

    start = len(dp.calls)
    update = dp.update_app()
    assert update["status_code"] == 200 and update["update_deliveries"] == 1, update["answer"]
    costs["update"] = rest_calls(dp, start)
    deliveries = [d for d in dp.deliveries if d["event"] in ("ONAPPUPDATE", "ONAPPINSTALL")]
    assert all(d["status"] == 200 for d in deliveries), deliveries
    portal = portal_row(services)
    assert portal.app_version == "2" and portal.manifest_key.startswith("2:")
    assert services.cipher.decrypt(portal.application_token_enc) == update["application_token"]
    assert bound_events(services, portal.id) == set(desired_events(app_server.url, portal.scope))
    from addon.robots.registry import robot_definitions

    assert sorted(dp.robots) == sorted(r["CODE"] for r in robot_definitions(app_server.url))
    with services.sessions() as session:
        assert session.get(PortalSettings, portal.id).data["notify_time"] == "07:30"
        assert session.scalars(select(TrackedEntity)).one().status == "HOT"

    start = len(dp.calls)
    assert dp.uninstall_app(clean=False) == 1 and dp.wait_for_deliveries(10)
    costs["uninstall"] = rest_calls(dp, start)
    assert portal_row(services).status == "uninstalled"

    refused = [c for c in dp.calls if c["error"]]
    assert refused == [], refused  # nothing ran into the limit: no back-off was even needed
    totals = {step: sum(calls.values()) for step, calls in costs.items()}
    with capsys.disabled():
        print("\nREST calls per step:", totals, {k: dict(v) for k, v in costs.items()})
    assert totals["install"] <= INSTALL_CALLS and totals["re-install"] <= REINSTALL_CALLS
    assert totals["update"] <= INSTALL_CALLS and totals["uninstall"] == 0


def test_an_api_only_update_rebinds_from_onappupdate_alone(services, devportal, app_server):
    dp = devportal.portal
    s = services.settings
    dp.install_app(app_server.url, s.client_id, s.client_secret, api_only=True)
    portal = portal_row(services)
    assert "ONAPPUPDATE" in bound_events(services, portal.id)
    update = dp.update_app(version=7)
    assert update["status_code"] == 200 and update["update_deliveries"] == 1
    portal = portal_row(services)
    assert portal.app_version == "7"
    assert services.cipher.decrypt(portal.application_token_enc) == update["application_token"]
    assert bound_events(services, portal.id) == set(desired_events(app_server.url, portal.scope))
    assert dp.robots  # registered again


def test_the_same_version_applied_again_costs_one_read_and_writes_nothing(services, devportal, app_server):
    dp = devportal.portal
    s = services.settings
    dp.install_app(app_server.url, s.client_id, s.client_secret)
    portal = portal_row(services)
    start = len(dp.calls)
    report = apply_manifest(services, portal.id)
    assert not report.changed and report.errors == []
    assert rest_calls(dp, start) == Counter({"batch": 1})


def test_enum_items_whose_xml_id_the_portal_chose_are_mapped_by_value_then_by_their_id(services, devportal,
                                                                                     app_server):
    dp = devportal.portal
    dp.enum_xml_ids = "own"
    s = services.settings
    assert dp.install_app(app_server.url, s.client_id, s.client_secret)["status_code"] == 200
    portal = portal_row(services)
    with PortalClient(services, portal.id) as client:
        field = next(f for f in client.call("crm.contact.userfield.list") if f["FIELD_NAME"] == STATUS_FIELD)
    assert not {i["XML_ID"] for i in field["LIST"]} & {"NEW", "HOT", "LOST"}  # the portal's own codes
    with services.sessions() as session:
        row = session.get(PortalSettings, portal.id)
        items = dict(row.field_items["contact"])
        assert items == {code: next(i["ID"] for i in field["LIST"] if i["VALUE"] == name) for code, name in
            (("NEW", "Новый"), ("IN_WORK", "В работе"), ("HOT", "Горячий"), ("WARM", "Тёплый"),
             ("COLD", "Холодный"), ("LOST", "Пропал"))}
    assert not apply_manifest(services, portal.id).changed  # no churn over codes the portal keeps its own

    with services.sessions() as session:  # a rename: found by its stored item ID, renamed in place
        row = session.get(PortalSettings, portal.id)
        options = Options.from_dict(row.data)
        statuses = [StatusDef("HOT", "Очень горячий", days=30) if st.code == "HOT" else st for st in options.statuses]
        row.data = Options.from_dict({**options.to_dict(), "statuses": [x.to_dict() for x in statuses]}).to_dict()
        session.commit()
    assert sync_status_fields(services, portal.id).fields_updated
    with services.sessions() as session:
        assert session.get(PortalSettings, portal.id).field_items["contact"]["HOT"] == items["HOT"]
    assert not sync_status_fields(services, portal.id).changed


def test_an_enum_list_the_portal_cannot_map_fails_the_install_and_stores_nothing(services, devportal, app_server,
                                                                                monkeypatch):
    monkeypatch.setattr("install.manifest_diff.match_items", lambda current, desired, stored=None: {})
    s = services.settings
    answer = devportal.portal.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 502 and "nothing was changed" in answer["answer"], answer["answer"]
    with services.sessions() as session:
        assert session.scalars(select(Portal)).all() == []


def test_without_a_zone_name_the_portal_offset_is_the_time_zone(services, devportal, app_server):
    dp = devportal.portal
    dp.users[1]["TIME_ZONE"] = ""
    s = services.settings
    dp.install_app(app_server.url, s.client_id, s.client_secret)
    portal = portal_row(services)
    assert portal.time_zone == "+03:00"
    with services.sessions() as session:
        assert session.get(PortalSettings, portal.id).data["time_zone"] == "+03:00"


def test_a_scope_separated_by_spaces_is_understood(services, devportal, app_server):
    dp = devportal.portal
    s = services.settings
    dp.install_app(app_server.url, s.client_id, s.client_secret, api_only=True)  # auth[scope]: "crm placement …"
    portal = portal_row(services)
    assert " " not in portal.scope and {"crm", "placement", "telephony"} <= set(portal.scope.split(","))
    assert "ONVOXIMPLANTCALLEND" in bound_events(services, portal.id)


def test_the_devportal_takes_show_filter_as_y_or_n_only(services, devportal, app_server):
    dp = devportal.portal
    s = services.settings
    answer = dp.install_app(app_server.url, s.client_id, s.client_secret)
    bad = rest(devportal, "crm.contact.userfield.add", answer["access_token"],
               fields={"FIELD_NAME": "X_TEST", "USER_TYPE_ID": "string", "SHOW_FILTER": "E"})
    assert bad.json()["error"] == "ERROR_ARGUMENT"
    portal = portal_row(services)
    with PortalClient(services, portal.id) as client:
        fields = {f["FIELD_NAME"]: f for f in client.call("crm.contact.userfield.list")}
    assert fields[STATUS_FIELD]["SHOW_FILTER"] == "Y" and REASON_FIELD in fields
