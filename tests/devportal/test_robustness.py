"""Concurrency, injected latency, an injected clock, and the offline-event process cycle."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import requests

from devportal.server import DevPortalServer
from tests.devportal.conftest import rest


def test_concurrent_writes_and_lists_stay_consistent(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    statuses: list[int] = []

    def writer(n):
        with requests.Session() as s:
            for i in range(40):
                r = s.post(f"{srv.url}/rest/crm.contact.add", json={"auth": token, "fields": {"NAME": f"{n}-{i}"}})
                statuses.append(r.status_code)
                r = s.post(f"{srv.url}/rest/crm.contact.list", json={"auth": token, "select": ["ID"]})
                statuses.append(r.status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) == {200} and len(statuses) == 320
    ids = sorted(int(i) for i in srv.portal.records["contact"])
    assert ids == list(range(1, 161))


def test_injected_clock_drives_the_portal_time():
    moments = [datetime(2025, 4, 1, 8, 0, tzinfo=ZoneInfo("UTC"))]
    with DevPortalServer(limits=False, clock=lambda: moments[0], tz="Asia/Yekaterinburg") as srv:
        assert srv.portal.iso() == "2025-04-01T13:00:00+05:00"
        moments[0] += timedelta(hours=1)
        assert srv.portal.iso() == "2025-04-01T14:00:00+05:00"
        srv.portal.advance(days=1)
        assert srv.portal.iso() == "2025-04-02T14:00:00+05:00"


def test_injected_latency_slows_each_call(installed):
    srv, answer, _ = installed
    srv.portal.set_faults(latency_ms=120)
    started = time.perf_counter()
    assert rest(srv, "profile", answer["access_token"]).status_code == 200
    assert time.perf_counter() - started >= 0.12


# doc: api-reference/events/event-offline-get.md ; event-offline-clear.md
def test_offline_events_with_a_process_id_are_cleared_explicitly(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    rest(srv, "event.bind", token, event="ONCRMDEALADD", event_type="offline")
    for title in ("a", "b"):
        srv.portal.act_add("deal", {"TITLE": title})
    got = rest(srv, "event.offline.get", token, clear=0).json()["result"]
    assert got["process_id"] and [e["EVENT_DATA"]["FIELDS"]["ID"] for e in got["events"]] == ["1", "2"]
    listed = rest(srv, "event.offline.list", token).json()["result"]
    assert len(listed) == 2
    assert rest(srv, "event.offline.clear", token, process_id=got["process_id"],
                message_id=[got["events"][0]["MESSAGE_ID"]]).json()["result"] is True
    left = rest(srv, "event.offline.list", token).json()["result"]
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in left] == ["2"]
    user_token = srv.portal.issue_tokens(srv.portal.add_user("Не", "Админ"))["access_token"]
    assert rest(srv, "event.offline.get", user_token).json()["error"] == "ACCESS_DENIED"
