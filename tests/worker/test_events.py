"""Processing stored events against the devportal: manual changes recorded or reverted, calls,
deals, new and deleted clients, our own writes as echoes, and what a burst costs in REST calls."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from addon.models import NotificationLog, PortalSettings, StatusHistory, StoredEvent
from tests.worker.conftest import DAY0, at


def setup_portal(h, contacts=30, **opts):
    h.dp.seed(departments=2, managers=6, contacts=contacts, companies=5, months_of_calls=0, deals=0, rng_seed=5)
    h.install(**opts)
    for cid in range(1, contacts + 1):
        h.put_status("contact", cid, "HOT", at(DAY0 - dt.timedelta(days=5), 10))
    h.reindex(at(DAY0, 8))


def history(h, kind, eid):
    with h.services.sessions() as s:
        return [(x.from_status, x.to_status, x.changed_on, x.cause) for x in s.scalars(
            select(StatusHistory).where(StatusHistory.entity_type == kind, StatusHistory.entity_id == eid)
            .order_by(StatusHistory.id))]


def test_manual_change_is_recorded_from_date_modify(harness):
    h = harness
    setup_portal(h)
    h.clock(at(DAY0, 11))
    h.manager_sets("contact", 1, "WARM")
    h.manager_sets("contact", 2, "HOT")  # re-selecting the current status changes nothing
    report = h.drain(at(DAY0, 11, 5))
    assert report.failed == 0 and report.reverts == 0
    row = h.row("contact", 1)
    assert (row.status, row.status_set_on, row.due_on) == ("WARM", DAY0, DAY0 + dt.timedelta(days=60))
    assert history(h, "contact", 1)[-1] == ("HOT", "WARM", DAY0, "manager")
    assert h.row("contact", 2).status_set_on == DAY0 - dt.timedelta(days=5)
    assert h.calls("crm.contact.update") == []  # nothing to write back


def test_no_change_without_a_call_reverts_and_warns_at_once(harness):
    h = harness
    setup_portal(h, require_call=True, call_lookback_days=3)
    # Contact 1: a call on Friday, the change on Monday: allowed (seed 003's example).
    h.clock(at(DAY0 - dt.timedelta(days=3), 18))
    h.dp.act_call("contact", 1, user_id=int(h.dp.records["contact"][1]["ASSIGNED_BY_ID"]))
    h.clock(at(DAY0, 10))
    h.manager_sets("contact", 1, "WARM")
    # Contact 2: no call at all: reverted, the manager told immediately.
    h.manager_sets("contact", 2, "COLD", user_id=3)
    report = h.drain(at(DAY0, 10, 1))
    assert report.reverts == 1
    assert h.row("contact", 1).status == "WARM" and h.portal_status("contact", 1) == "WARM"
    assert h.row("contact", 2).status == "HOT" and h.portal_status("contact", 2) == "HOT"
    assert history(h, "contact", 2)[-1] == ("COLD", "HOT", DAY0, "revert")
    told = [n for n in h.dp.notifications if n["user_id"] == 3]
    assert len(told) == 1 and "Горячий" in told[0]["message"] and "звонка" in told[0]["message"]
    # The echo of our revert write is not a manual change.
    again = h.drain(at(DAY0, 10, 2))
    assert again.reverts == 0 and h.row("contact", 2).status == "HOT"
    assert len(h.calls("crm.contact.update")) == 1


def test_required_reason(harness):
    h = harness
    from addon.options import StatusDef

    setup_portal(h)
    opts = h.options()
    statuses = tuple(StatusDef(s.code, s.name, s.system, s.days, s.warn_days, ("дорого", "уехал"))
                     if s.code == "COLD" else s for s in opts.statuses)
    h.set_options(statuses=statuses)
    from install.manifest_apply import sync_status_fields

    sync_status_fields(h.services, h.portal_id)
    from addon.rules.ladder import reason_code

    reasons = {text: h.items("reason_contact")[reason_code(text)] for text in ("дорого", "уехал")}
    h.clock(at(DAY0, 12))
    h.manager_sets("contact", 3, "COLD")
    h.manager_sets("contact", 4, "COLD", reason_item=reasons["дорого"])
    h.drain(at(DAY0, 12, 1))
    assert h.row("contact", 3).status == "HOT" and h.portal_status("contact", 3) == "HOT"
    assert h.row("contact", 4).status == "COLD" and h.row("contact", 4).reason == "дорого"


def test_calls_move_the_last_call_and_deals_move_status(harness):
    h = harness
    setup_portal(h)
    h.clock(at(DAY0, 13))
    h.dp.act_call("contact", 5, user_id=2)
    h.dp.act_call("contact", 6, user_id=2, completed=False)
    deal = h.dp.act_add("deal", {"TITLE": "Кухня", "CONTACT_ID": 7, "STAGE_ID": "NEW"}, user_id=2)
    h.drain(at(DAY0, 13, 5))
    assert h.row("contact", 5).last_call_on == DAY0
    assert h.row("contact", 5).due_on == DAY0 + dt.timedelta(days=30)
    assert h.row("contact", 6).last_call_on is None
    assert h.row("contact", 7).status == "IN_WORK" and h.portal_status("contact", 7) == "IN_WORK"
    h.clock(at(DAY0 + dt.timedelta(days=2), 13))
    h.dp.act_close_deal(deal, won=False, user_id=2)
    h.drain(at(DAY0 + dt.timedelta(days=2), 13, 5))
    row = h.row("contact", 7)
    assert row.status == "HOT" and row.open_deals == 0 and h.portal_status("contact", 7) == "HOT"
    # The same closed deal seen again (a replayed event) changes nothing.
    h.dp.act_update("deal", deal, {"COMMENTS": "x"}, user_id=2)
    h.drain(at(DAY0 + dt.timedelta(days=2), 14))
    assert h.row("contact", 7).status_set_on == DAY0 + dt.timedelta(days=2)
    # Won: HOT with a fresh timer.
    h.clock(at(DAY0 + dt.timedelta(days=3), 9))
    deal2 = h.dp.act_add("deal", {"TITLE": "Шкаф", "CONTACT_ID": 8, "STAGE_ID": "NEW"}, user_id=2)
    h.drain(at(DAY0 + dt.timedelta(days=3), 9, 5))
    h.clock(at(DAY0 + dt.timedelta(days=4), 9))
    h.dp.act_close_deal(deal2, won=True, user_id=2)
    h.drain(at(DAY0 + dt.timedelta(days=4), 9, 5))
    assert history(h, "contact", 8)[-2:] == [("HOT", "IN_WORK", DAY0 + dt.timedelta(days=3), "deal"),
                                             ("IN_WORK", "HOT", DAY0 + dt.timedelta(days=4), "deal")]


def test_a_call_counts_for_every_client_it_is_bound_to(harness):
    """crm.activity.binding.list gives the items a call is bound to (crm.activity.get has no
    BINDINGS): a call to a company's contact person counts for the company too, and a call logged on
    a deal for the deal's contact."""
    h = harness
    setup_portal(h)
    h.put_status("company", 2, "HOT", at(DAY0 - dt.timedelta(days=5), 10))
    h.reindex(at(DAY0, 8, 30))
    assert h.row("company", 2).last_call_on is None
    h.clock(at(DAY0, 13))
    h.dp.act_call("contact", 5, user_id=2, also=(("company", 2),))
    deal = h.dp.act_add("deal", {"TITLE": "Кухня", "CONTACT_ID": 9, "STAGE_ID": "NEW"}, user_id=2)
    h.drain(at(DAY0, 13, 5))
    h.clock(at(DAY0 + dt.timedelta(days=1), 11))
    h.dp.act_call("deal", deal, user_id=2, also=(("contact", 9),))
    h.drain(at(DAY0 + dt.timedelta(days=1), 11, 5))
    assert h.row("contact", 5).last_call_on == DAY0
    assert h.row("company", 2).last_call_on == DAY0
    assert h.row("company", 2).due_on == DAY0 + dt.timedelta(days=30)
    assert h.row("contact", 9).last_call_on == DAY0 + dt.timedelta(days=1)
    assert h.row("contact", 6).last_call_on is None


def test_the_bindings_of_many_calls_cost_one_batch(harness):
    """Sixty calls at once: their bindings are read with crm.activity.binding.list inside batches
    (two HTTP calls for 60 activities), never one request per call; a binding that cannot be read
    (rate limit) keeps its events for a later attempt instead of crediting only the owner."""
    h = harness
    setup_portal(h, contacts=30)
    h.put_status("company", 3, "HOT", at(DAY0 - dt.timedelta(days=5), 10))
    h.reindex(at(DAY0, 8, 30))
    h.clock(at(DAY0, 13))
    before = len(h.dp.calls)
    for cid in range(1, 31):
        h.dp.act_call("contact", cid, user_id=2, also=(("company", 3),) if cid == 30 else ())
        h.dp.act_call("contact", cid, user_id=2)
    report = h.drain(at(DAY0, 13, 5))
    assert report.failed == 0
    made = h.dp.calls[before:]
    bound = [c for c in made if c["method"] == "crm.activity.binding.list"]
    assert len(bound) == 60 and all(c["in_batch"] for c in bound)
    assert all("BINDINGS" not in c["method"] for c in made if not c.get("in_batch"))
    assert h.row("company", 3).last_call_on == DAY0 and h.row("contact", 30).last_call_on == DAY0
    # The binding read refused: the call waits, company 4 is not credited on the owner alone.
    h.put_status("company", 4, "HOT", at(DAY0 - dt.timedelta(days=5), 10))
    h.reindex(at(DAY0, 14))
    h.clock(at(DAY0, 15))
    h.dp.act_call("contact", 2, user_id=2, also=(("company", 4),))
    assert h.dp.wait_for_deliveries(30)
    h.dp.set_faults(method_errors={"crm.activity.binding.list": "QUERY_LIMIT_EXCEEDED"})
    report = h.drain(at(DAY0, 15, 5))
    assert report.failed >= 1 and h.row("company", 4).last_call_on is None
    h.dp.set_faults()
    report = h.drain(at(DAY0, 15, 10))
    assert report.failed == 0 and h.row("company", 4).last_call_on == DAY0


def test_new_clients_get_new_and_deleted_ones_stop_being_tracked(harness):
    h = harness
    setup_portal(h)
    h.clock(at(DAY0, 15))
    cid = h.dp.act_add("contact", {"NAME": "Новый", "LAST_NAME": "Клиент"}, user_id=2)
    h.dp.act_delete("contact", 9)
    h.drain(at(DAY0, 15, 1))
    row = h.row("contact", cid)
    assert (row.status, row.status_set_on, row.due_on) == ("NEW", DAY0, DAY0 + dt.timedelta(days=10))
    assert h.portal_status("contact", cid) == "NEW"
    assert h.row("contact", 9) is None
    # The echo of writing NEW is recognised: nothing else happens.
    report = h.drain(at(DAY0, 15, 2))
    assert report.steps == 0 and len(h.calls("crm.contact.update")) == 1


def test_a_failing_event_is_retried_without_blocking_others(harness):
    h = harness
    setup_portal(h)
    from addon import engine, rules

    with h.services.sessions() as s:  # contact 10 has been HOT for 40 days: overdue
        row = engine.tracked_row(s, h.portal_id, "contact", 10)
        engine.store(row, rules.Entity(status="HOT", status_set_on=DAY0 - dt.timedelta(days=40)), h.options())
        s.commit()
    # The enumeration list lost its WARM item (out of sync): contact 10, overdue, must decay to
    # WARM when its call comes in, and cannot be written.
    with h.services.sessions() as s:
        row = s.get(PortalSettings, h.portal_id)
        items = dict(row.field_items)
        items["contact"] = {k: v for k, v in items["contact"].items() if k != "WARM"}
        row.field_items = items
        s.commit()
    h.clock(at(DAY0, 16))
    h.dp.act_call("contact", 10, user_id=2)
    h.manager_sets("contact", 11, "COLD")
    report = h.drain(at(DAY0, 16, 1))
    assert report.failed == 2 and report.processed > 0  # the call's two events
    assert h.row("contact", 11).status == "COLD"
    with h.services.sessions() as s:
        failing = s.scalars(select(StoredEvent).where(StoredEvent.processed_at.is_(None))).all()
    assert {(e.attempts, "WARM" in e.error) for e in failing} == {(1, True)}
    assert h.row("contact", 10).status == "HOT"  # nothing half-applied
    # The list is synced again: the retry goes through.
    from install.manifest_apply import sync_status_fields

    sync_status_fields(h.services, h.portal_id)
    report = h.drain(at(DAY0, 16, 5))
    assert report.failed == 0
    assert h.row("contact", 10).status == "WARM" and h.portal_status("contact", 10) == "WARM"


def test_burst_of_1000_events_costs_at_most_25_rest_calls(harness):
    h = harness
    h.dp.seed(departments=2, managers=6, contacts=700, companies=100, months_of_calls=0, deals=0, rng_seed=9)
    h.install()
    for cid in range(1, 701):
        h.put_status("contact", cid, "HOT", at(DAY0 - dt.timedelta(days=5), 10))
    for cid in range(1, 101):
        h.put_status("company", cid, "WARM", at(DAY0 - dt.timedelta(days=5), 10))
    h.reindex(at(DAY0, 8))
    h.clock(at(DAY0, 12))
    # 1,000 events: 600 card edits (400 real status changes), 150 calls (two events each: the
    # activity and the telephony call end), 100 company edits.
    for cid in range(1, 601):
        h.manager_sets("contact", cid, "WARM" if cid <= 400 else "HOT")
    for cid in range(551, 701):
        h.dp.act_call("contact", cid, user_id=2)
    for cid in range(1, 101):
        h.manager_sets("company", cid, "COLD")
    assert h.dp.wait_for_deliveries(30)
    with h.services.sessions() as s:
        stored = s.scalar(select(func.count()).select_from(StoredEvent).where(StoredEvent.processed_at.is_(None)))
    assert stored == 1000
    # The portal's real limits from here on: 2 requests/s, burst 50.
    h.dp.set_limits(rps=2.0, burst=50, enabled=True)
    before = h.dp.http_requests
    report = h.drain(at(DAY0, 12, 30))
    cost = h.dp.http_requests - before
    assert report.processed == 1000 and report.failed == 0
    assert cost <= 25, cost
    assert h.row("contact", 400).status == "WARM" and h.row("company", 100).status == "COLD"
    assert h.row("contact", 650).last_call_on == DAY0
    with h.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(NotificationLog)) == 0


def test_events_lost_on_the_way_are_recovered_by_reconcile(harness):
    h = harness
    setup_portal(h)
    from addon.models import Portal
    from worker.jobs import reconcile_all

    with h.services.sessions() as s:  # the last reconcile pass saw the portal as of 08:00
        portal = s.get(Portal, h.portal_id)
        portal.entity_watermark = portal.activity_watermark = dt.datetime(2026, 3, 2, 5, 0)
        s.commit()
    h.clock(at(DAY0, 12))
    h.dp.set_faults(drop_events=1.0)  # Bitrix24 never retries: every one of these is lost
    for cid in range(1, 6):
        h.manager_sets("contact", cid, "WARM")
    for cid in range(6, 9):
        h.dp.act_call("contact", cid, user_id=2)
    h.clock(at(DAY0, 12, 30))
    h.dp.set_faults(drop_events=0.0)
    assert h.drain(at(DAY0, 12, 30)).events == 0
    report = reconcile_all(h.services, at(DAY0, 12, 30))
    assert report.reconciled == 1 and report.errors == []
    h.drain(at(DAY0, 12, 31))
    assert [(h.row("contact", c).status, h.row("contact", c).status_set_on) for c in range(1, 6)] == [("WARM", DAY0)] * 5
    assert [h.row("contact", c).last_call_on for c in range(6, 9)] == [DAY0] * 3


def test_a_call_that_reaches_us_after_the_run_undoes_the_decay_it_prevented(harness):
    """DESIGN §1: the result must not depend on whether an event is processed before or after
    that day's run. HOT since DAY0-5 decays to WARM on DAY0+25; the manager called on DAY0+24,
    but the event is only processed after the run of DAY0+25."""
    h = harness
    setup_portal(h, contacts=3)
    call_day, due = DAY0 + dt.timedelta(days=24), DAY0 + dt.timedelta(days=25)
    h.clock(at(call_day, 17))
    h.dp.set_faults(drop_events=1.0)  # the call's event is lost on its way
    h.dp.act_call("contact", 1, user_id=int(h.dp.records["contact"][1]["ASSIGNED_BY_ID"]))
    h.dp.set_faults(drop_events=0.0)
    h.clock(at(due, 9))
    h.daily(at(due, 9))
    assert h.row("contact", 1).status == "WARM" and h.portal_status("contact", 1) == "WARM"
    # Reconcile finds the call later that morning.
    from worker.reconcile import reconcile_portal

    reconcile_portal(h.services, h.portal_id, at(due, 9, 30))
    report = h.drain(at(due, 9, 31))
    assert report.failed == 0
    row = h.row("contact", 1)
    assert (row.status, row.last_call_on, row.due_on) == ("HOT", call_day, call_day + dt.timedelta(days=30))
    assert h.portal_status("contact", 1) == "HOT"
    assert history(h, "contact", 1)[-2:] == [("HOT", "WARM", due, "decay"), ("WARM", "HOT", call_day, "revert")]
    # The others, not called, stay decayed; a second pass changes nothing.
    assert h.row("contact", 2).status == "WARM"
    reconcile_portal(h.services, h.portal_id, at(due, 10))
    h.drain(at(due, 10, 1))
    assert h.row("contact", 1).status == "HOT" and len(history(h, "contact", 1)) == 3
    with h.services.sessions() as s:
        notes = [x.note for x in s.scalars(select(StatusHistory).where(
            StatusHistory.entity_type == "contact", StatusHistory.entity_id == 1).order_by(StatusHistory.id))]
    assert notes[1].startswith("undone: a call on") and notes[2].startswith("undone: a call on")
