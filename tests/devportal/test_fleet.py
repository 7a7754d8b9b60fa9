"""Many portals on one devportal: each on its own loopback address with its own data, tokens and
leaky bucket, an injected latency per call, and the plan app.info reports with its limits."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from devportal.server import DevPortalFleet, loopback_address


def call(view, token, method, **params):
    return requests.post(f"{view.url}/rest/{method}.json", json={**params, "auth": token}, timeout=10)


def test_portals_of_a_fleet_have_their_own_addresses_data_and_buckets():
    with DevPortalFleet(3, rps=2.0, burst=5) as fleet:
        a, b, c = fleet.portals
        assert [v.host for v in fleet.portals] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        assert len({v.domain for v in fleet.portals}) == 3 and {v.port for v in fleet.portals} == {fleet.port}
        tokens = [v.portal.register_app("http://127.0.0.1:9", "local.t", "s")["access_token"] for v in fleet.portals]
        a.portal.act_add("contact", {"NAME": "Только в A"})
        assert call(a, tokens[0], "crm.contact.list").json()["total"] == 1
        assert call(b, tokens[1], "crm.contact.list").json()["total"] == 0
        # A's token means nothing on B.
        assert call(b, tokens[0], "profile").status_code == 401
        # A's bucket runs over; B's and C's are untouched.
        statuses = [call(a, tokens[0], "profile").status_code for _ in range(8)]
        assert statuses.count(503) >= 2
        assert [call(b, tokens[1], "profile").status_code for _ in range(3)] == [200] * 3  # 5 in all
        assert call(c, tokens[2], "profile").status_code == 200


def test_latency_is_per_call_and_portals_wait_side_by_side():
    with DevPortalFleet(4, latency_ms=200, limits=False) as fleet:
        tokens = [v.portal.register_app("http://127.0.0.1:9", "local.t", "s")["access_token"] for v in fleet.portals]
        t0 = time.monotonic()
        assert call(fleet.portals[0], tokens[0], "profile").status_code == 200
        one = time.monotonic() - t0
        assert one >= 0.2
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda i: call(fleet.portals[i], tokens[i], "profile").status_code, range(4)))
        assert codes == [200] * 4 and time.monotonic() - t0 < 0.6  # four portals' waits overlap


def test_the_plan_sets_app_info_and_the_limits():
    with DevPortalFleet(2) as fleet:
        std, ent = fleet.portals
        assert ent.portal.set_plan("ru_ent250") == {"license": "ru_ent250", "rps": 5.0, "burst": 250}
        tokens = [v.portal.register_app("http://127.0.0.1:9", "local.t", "s")["access_token"] for v in fleet.portals]
        info = call(ent, tokens[1], "app.info").json()["result"]
        assert (info["LICENSE"], info["LICENSE_TYPE"], info["LICENSE_FAMILY"]) == ("ru_ent250", "ent250", "ent")
        assert call(std, tokens[0], "app.info").json()["result"]["LICENSE"] == "ru_project"
        # Enterprise takes a burst of 250 where the others stop at 50.
        assert all(call(ent, tokens[1], "profile").status_code == 200 for _ in range(60))
        assert [call(std, tokens[0], "profile").status_code for _ in range(60)].count(503) >= 5


def test_loopback_addresses_skip_the_networks_own_and_127_0_0_1():
    assert loopback_address(0) == "127.0.0.2" and loopback_address(249) == "127.0.0.251"
    assert loopback_address(250) == "127.0.1.2" and loopback_address(999) == "127.0.3.251"
