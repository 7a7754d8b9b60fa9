"""Seed data: realistic, linked, and fast enough for a 14,000-client portal."""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from devportal.portal import DevPortal


def test_company_sized_seed_is_fast_and_realistic():
    portal = DevPortal(limits=False)
    portal.set_clock(datetime(2025, 9, 1, 10, 0, tzinfo=ZoneInfo("Europe/Moscow")), frozen=True)
    started = time.perf_counter()
    summary = portal.seed(departments=4, managers=24, contacts=12_000, companies=2_000, months_of_calls=6)
    assert time.perf_counter() - started < 5
    assert len(portal.records["contact"]) == 12_000 and len(portal.records["company"]) == 2_000
    # a tree: the company root with sub-departments, each with a head who works in it
    subs = [d for d in portal.departments.values() if d["PARENT"] == "1"]
    assert len(subs) == 4
    for dep in subs:
        head = portal.users[int(dep["UF_HEAD"])]
        assert int(dep["ID"]) in head["UF_DEPARTMENT"]
    assert any(not u["ACTIVE"] for u in portal.users.values()) and sum(u["ACTIVE"] for u in portal.users.values()) > 20
    # Russian names and phones typed in many ways
    first = portal.records["contact"][1]
    assert re.fullmatch(r"[А-ЯЁ][а-яё]+", first["NAME"]) and re.fullmatch(r"[А-ЯЁ][а-яё]+", first["LAST_NAME"])
    shapes = {re.sub(r"\d", "9", e["VALUE"]) for r in list(portal.records["contact"].values())[:300]
              for e in r["PHONE"]}
    assert len(shapes) >= 5
    # deals open, won and lost, linked to existing clients
    stages = {d["STAGE_SEMANTIC_ID"] for d in portal.records["deal"].values()}
    assert stages == {"P", "S", "F"}
    assert all(int(d["CONTACT_ID"]) in portal.records["contact"] for d in portal.records["deal"].values())
    # calls over the past six months, completed and missed, in and out
    calls = list(portal.activities.values())
    assert summary["calls"] == len(calls) > 10_000
    starts = [datetime.fromisoformat(c["START_TIME"]) for c in calls]
    assert min(starts) >= portal.now() - timedelta(days=181) and max(starts) < portal.now()
    assert {c["TYPE_ID"] for c in calls} == {"2"} and {c["DIRECTION"] for c in calls} == {"1", "2"}
    assert {c["COMPLETED"] for c in calls} == {"Y", "N"}
    # nothing was announced: the data predates the app
    assert portal.deliveries == [] and portal._pending == 0


def test_seed_is_reproducible():
    a, b = DevPortal(), DevPortal()
    for p in (a, b):
        p.set_clock(datetime(2025, 1, 1, tzinfo=ZoneInfo("Europe/Moscow")), frozen=True)
        p.seed(contacts=50, companies=5, rng_seed=9)
    assert a.records["contact"] == b.records["contact"]
