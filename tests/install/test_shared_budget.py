"""The web and the worker are separate processes calling one portal: they draw on that portal's one
budget (addon/bitrix/pace.py). While a daily run in a worker process holds the portal at its limit,
the admin's settings page, a manager's card tab and an app update all answer, and the portal
refuses nothing beyond what the back-off expects."""
from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import time

import pytest
import requests
from sqlalchemy import select

from addon.models import JobRun, Portal, PortalBudget
from tests.worker.conftest import DAY0, Harness, at
from tests.worker.simulation import worker_env

CONTACTS = 600
RPS, BURST = 2.0, 10  # the portal's limit: its real rate in a small bucket, so a short run holds the portal at it
# Our settings for it: the pace is the plan's (2/s, 50) scaled by portal_rps / 2, its depth the
# plan's less 50 - portal_burst; so 2/s and 8 deep, two requests of margin as in production.
PACE_RPS, PACE_BURST = 2.0, 8


def test_settings_page_card_tab_and_update_answer_while_a_daily_run_holds_the_limit(services, devportal,
                                                                                    app_server):
    h = Harness(services, devportal, app_server)
    dp = h.dp
    dp.set_limits(enabled=False)  # the set-up is not what is measured
    dp.seed(departments=1, managers=3, contacts=CONTACTS, companies=0, months_of_calls=0, deals=0, rng_seed=5)
    dp.set_clock(at(DAY0, 8), frozen=True)
    h.install()
    for eid in range(1, CONTACTS + 1):  # HOT for 100 days without a call: every one decays today
        h.put_status("contact", eid, "HOT", at(DAY0 - dt.timedelta(days=100), 10))
    h.reindex(at(DAY0, 8))

    # From now on the portal keeps a limit, on a running clock (its bucket drains in real time): a
    # small one, 1 request/s and 10 deep, so a short run holds it. Every process of ours keeps the
    # same margin under it as under the real 2/s and 50 (the plan's limits scaled by the settings).
    with services.sessions() as s:
        s.get(PortalBudget, h.portal_id).level = 0.0
        member_id = s.get(Portal, h.portal_id).member_id
        s.commit()
    services.settings = dataclasses.replace(services.settings, portal_rps=PACE_RPS, portal_burst=PACE_BURST)
    dp.set_limits(rps=RPS, burst=BURST, enabled=True)
    dp.set_clock(at(DAY0, 9, 30), frozen=False)
    mark = len(dp.calls)

    env = {**worker_env(services), "NEZABYT_PORTAL_RPS": str(PACE_RPS), "NEZABYT_PORTAL_BURST": str(PACE_BURST)}
    worker = subprocess.Popen([sys.executable, "-m", "addon", "decay", "--portal", member_id,
                               "--now", at(DAY0, 9, 30).isoformat()], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len([c for c in dp.calls[mark:] if c["method"] == "batch"]) < BURST and worker.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the run to fill the bucket, not for a clock
        assert worker.poll() is None, "the daily run ended before the web was tried"
        busy_from = len(dp.calls)

        page = requests.post(f"{app_server.url}/app", params=dp.page_query(),
                             data=dp.page_form(dp.issue_tokens(1), "DEFAULT", {}), timeout=60)
        assert page.status_code == 200, page.text[:500]
        assert "Не забыт" in page.text

        tab = next(p for p in dp.placements if p["placement"] == "CRM_CONTACT_DETAIL_TAB")
        manager = int(dp.records["contact"][5]["ASSIGNED_BY_ID"])
        card = requests.post(tab["handler"], params=dp.page_query(),
                             data=dp.page_form(dp.issue_tokens(manager), tab["placement"], {"ID": "5"}), timeout=60)
        assert card.status_code == 200, card.text[:500]

        assert worker.poll() is None, "the daily run ended before the update was tried"
        update_from = len(dp.calls)
        update = dp.update_app()
        assert update["status_code"] == 200 and update["update_deliveries"] == 1, update["answer"][:500]
        assert all(d["status"] == 200 for d in dp.deliveries if d["event"] == "ONAPPUPDATE")
        # the run's writes went on while the update was being applied: the two shared the bucket
        # (decays, or the digest's messages and comments if the run had reached them; an update
        # makes none of these)
        run_writes = {"crm.contact.update", "crm.company.update", "im.notify.system.add",
                      "im.notify", "crm.timeline.comment.add", "log.blogpost.add"}
        assert any(c["method"] in run_writes for c in dp.calls[update_from:])
        with services.sessions() as s:
            assert s.get(Portal, h.portal_id).app_version == "2"
    finally:
        out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err.decode()[-2000:]
    with services.sessions() as s:
        run = s.scalars(select(JobRun).where(JobRun.portal_id == h.portal_id, JobRun.kind == "daily")).one()
        assert run.status == "done"
    during = dp.calls[busy_from:]
    refused = [c for c in dp.calls[mark:] if c["status"] == 503]
    # One budget for both processes: the portal was at its limit, yet no request went over it.
    assert len([c for c in during if not c["in_batch"]]) >= 5
    assert refused == [], [(c["method"], c["error"]) for c in refused]
