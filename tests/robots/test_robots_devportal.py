"""The seeds' scenarios played through lead and deal pipelines on the devportal: what the portal ends
up with (responsible, stage, tasks, messages, return values) after the worker runs the robots."""
from __future__ import annotations

import datetime as dt

import pytest
import requests
from sqlalchemy import func, select

from addon.models import RobotTimer, StoredEvent
from addon.robots.registry import robot_definitions
from addon.robots.store import close_reason_counts, mark_absent, ranking_report
from addon.services import build_services
from addon.robots.runner import fire_due_timers
from tests.factories import make_robot_call


def test_every_robot_is_registered_and_reinstall_changes_nothing(world):
    registered = world.portal.robots
    expected = {d["CODE"]: d for d in robot_definitions(world.app_server.url)}
    assert set(registered) == set(expected)
    assert registered["nezabyt_distribute_deal"]["DOCUMENT_TYPE"] == ["crm", "CCrmDocumentDeal", "DEAL"]
    before = len([c for c in world.portal.calls if c["method"].startswith("bizproc.robot.")
                  and c["method"] != "bizproc.robot.list"])
    s = world.services.settings
    world.portal.install_app(world.app_server.url, s.client_id, s.client_secret)
    after = len([c for c in world.portal.calls if c["method"].startswith("bizproc.robot.")
                 and c["method"] != "bizproc.robot.list"])
    assert after == before


def test_round_robin_never_chooses_a_deactivated_or_absent_manager(world):
    m1, m2, m3, m4 = world.managers
    pool = {"mode": "round_robin", "users": [m1, m2, m3, m4]}
    leads = [world.lead(f"Лид {i}") for i in range(6)]
    for lead in leads[:3]:
        world.robot("distribute", "lead", lead, **pool)
    assert world.process() == 3
    # the admin marks Мария absent: the next leads skip her, and on return she gets no backlog
    with world.services.sessions.begin() as s:
        mark_absent(s, world.portal_id, m4)
    for lead in leads[3:]:
        world.robot("distribute", "lead", lead, **pool)
    assert world.process() == 3
    owners = [int(world.record("lead", lead)["ASSIGNED_BY_ID"]) for lead in leads]
    assert owners == [m1, m3, m4, m1, m3, m1]
    assert m2 not in owners
    replies = world.replies("distribute")
    assert [r["return_values"]["assigned_user"] for r in replies] == [f"user_{u}" for u in owners]
    assert any("назначен" in m for m in world.messages_to(m3))
    # a rerun of the worker decides nothing twice
    assert world.process() == 0
    assert len(world.replies("distribute")) == 6


def test_department_pool_and_least_loaded(world):
    m1, _, m3, m4 = world.managers
    for _ in range(2):
        world.lead("старый", ASSIGNED_BY_ID=m1)
    world.lead("старый", ASSIGNED_BY_ID=m3)
    lead = world.lead("новый")
    world.robot("distribute", "lead", lead, mode="least_loaded", departments=str(world.department), task_minutes=30)
    assert world.process() == 1
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == m4
    task = world.tasks_for(f"L_{lead}")[-1]
    assert task["responsibleId"] == str(m4)
    assert dt.datetime.fromisoformat(task["deadline"]) == world.now() + dt.timedelta(minutes=30)


def test_fifteen_minute_sla_breach_reassigns_once_per_breach(world):
    m1, _, m3, m4 = world.managers
    pool = {"mode": "round_robin", "users": [m1, m3, m4], "minutes": 15, "max_reassign": 1}
    lead = world.lead("Срочный лид", ASSIGNED_BY_ID=m1)
    world.robot("take_in_work", "lead", lead, **pool)
    assert world.process() == 1
    world.advance(minutes=14)
    assert world.fire() == 0
    world.advance(minutes=2)
    assert world.fire() == 1
    new_owner = int(world.record("lead", lead)["ASSIGNED_BY_ID"])
    assert new_owner in (m3, m4)
    assert any("передан" in m for m in world.messages_to(new_owner))
    assert any("передан" in m for m in world.messages_to(m1))
    assert any("не взял" in m for m in world.messages_to(world.head))
    # the same breach fired again (a second worker, a rerun) changes nothing
    assert world.fire() == 0
    updates = [c for c in world.portal.calls if c["method"] == "crm.lead.update"]
    assert len(updates) == 1
    # the second breach: the ladder (K = 1) is used up — no more reassignment, the answer is "not met"
    world.advance(minutes=16)
    assert world.fire() == 1
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == new_owner
    reply = world.replies("take_in_work")[-1]
    assert reply["return_values"]["sla_met"] == "N"
    assert len([c for c in world.portal.calls if c["method"] == "crm.lead.update"]) == 1


def test_sla_met_when_the_manager_calls_in_time(world):
    m1 = world.managers[0]
    lead = world.lead("Лид", ASSIGNED_BY_ID=m1)
    world.robot("take_in_work", "lead", lead, minutes=15, users=[m1, world.managers[2]])
    world.process()
    world.advance(minutes=5)
    world.portal.act_call("lead", lead, user_id=m1)
    world.advance(minutes=11)
    assert world.fire() == 1
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == m1
    assert world.replies("take_in_work")[-1]["return_values"] == {"sla_met": "Y", "responsible": f"user_{m1}"}


def test_timers_survive_a_worker_restart(world):
    m1, _, m3, _ = world.managers
    lead = world.lead("Лид", ASSIGNED_BY_ID=m1)
    world.robot("take_in_work", "lead", lead, minutes=15, users=[m1, m3])
    world.process()
    world.services.dispose()  # the worker process dies
    world.advance(minutes=20)
    fresh = build_services(world.services.settings)  # a new process: nothing but the database
    try:
        assert fire_due_timers(fresh, world.now()) == 1
    finally:
        fresh.dispose()
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == m3


def test_call_cadence_tasks_on_the_right_days_then_the_final_stage(world):
    m1 = world.managers[0]
    lead = world.lead("Не дозвонились", status="IN_PROCESS", ASSIGNED_BY_ID=m1)
    world.robot("call_cadence", "lead", lead, final_stage="JUNK")
    world.process()
    start = world.now()
    world.run_for(days=57)  # eight weeks
    tasks = world.tasks_for(f"L_{lead}")
    assert len(tasks) == 13
    days = [(dt.datetime.fromisoformat(t["deadline"]).date() - start.date()).days for t in tasks]
    assert days[:3] == [2, 4, 6]
    for week in (1, 2, 3):
        in_week = [dt.datetime.fromisoformat(t["deadline"]) for t in tasks
                   if 7 * week <= (dt.datetime.fromisoformat(t["deadline"]).date() - start.date()).days < 7 * week + 7]
        assert len(in_week) == 2 and sum(d.weekday() >= 5 for d in in_week) == 1
    for week in (4, 5, 6, 7):
        assert sum(7 * week <= d < 7 * week + 7 for d in days) == 1
    for t in tasks:
        deadline = dt.datetime.fromisoformat(t["deadline"])
        assert deadline.hour in (13, 15, 21) and t["responsibleId"] == str(m1)
    assert world.record("lead", lead)["STATUS_ID"] == "JUNK"


def test_call_cadence_stops_at_the_first_completed_call(world):
    m1 = world.managers[0]
    lead = world.lead("Не дозвонились", status="IN_PROCESS", ASSIGNED_BY_ID=m1)
    world.robot("call_cadence", "lead", lead, final_stage="JUNK")
    world.process()
    world.run_for(days=5)
    assert len(world.tasks_for(f"L_{lead}")) == 2
    world.portal.act_call("lead", lead, user_id=m1, completed=False)  # no answer: the cadence goes on
    world.run_for(days=2)
    assert len(world.tasks_for(f"L_{lead}")) == 3
    world.portal.act_call("lead", lead, user_id=m1)  # the client answered
    world.run_for(days=60)
    assert len(world.tasks_for(f"L_{lead}")) == 3
    assert world.record("lead", lead)["STATUS_ID"] == "IN_PROCESS"


def test_repeat_request_from_a_known_phone_goes_to_the_active_responsible(world):
    m1 = world.managers[0]
    contact = world.portal.act_add("contact", {"NAME": "Ирина", "LAST_NAME": "Клиентова", "ASSIGNED_BY_ID": m1,
                                               "PHONE": [{"VALUE": "+7 917 123-45-78", "VALUE_TYPE": "WORK"}]})
    lead = world.lead("Повторная заявка", phone="8 (917) 123-45-78", status="IN_PROCESS", ASSIGNED_BY_ID=1)
    world.robot("one_client_per_phone", "lead", lead)
    assert world.process() == 1
    record = world.record("lead", lead)
    assert int(record["ASSIGNED_BY_ID"]) == m1 and record["STATUS_ID"] == "IN_PROCESS"
    task = world.tasks_for(f"L_{lead}")[-1]
    assert task["responsibleId"] == str(m1) and f"C_{contact}" in task["ufCrmTask"]
    assert world.replies("phone")[-1]["return_values"] == {"duplicate_id": str(contact), "duplicate_type": "contact",
                                                          "outcome": "owner"}


def test_repeat_request_whose_responsible_is_deactivated_returns_to_the_first_stage(world):
    contact = world.portal.act_add("contact", {"NAME": "Олег", "ASSIGNED_BY_ID": world.inactive,
                                               "PHONE": [{"VALUE": "+79991259999", "VALUE_TYPE": "MOBILE"}]})
    lead = world.lead("Повторная заявка", phone="+7(999) 125-99-99", status="IN_PROCESS",
                      ASSIGNED_BY_ID=world.managers[2])
    world.robot("one_client_per_phone", "lead", lead)
    world.process()
    record = world.record("lead", lead)
    assert record["STATUS_ID"] == "NEW" and record["OPENED"] == "Y"
    assert world.tasks_for(f"L_{lead}") == []
    assert world.replies("phone")[-1]["return_values"]["outcome"] == "return"
    assert world.replies("phone")[-1]["return_values"]["duplicate_id"] == str(contact)


def test_no_phone_means_a_task_to_get_one(world):
    m3 = world.managers[2]
    lead = world.lead("Без телефона", ASSIGNED_BY_ID=m3)
    world.robot("one_client_per_phone", "lead", lead)
    world.process()
    task = world.tasks_for(f"L_{lead}")[-1]
    assert task["responsibleId"] == str(m3) and "телефон" in task["title"].lower()
    assert world.replies("phone")[-1]["return_values"]["outcome"] == "no_phone"


def test_required_fields_and_close_reason_send_the_item_back(world):
    m1 = world.managers[0]
    lead = world.lead("Кухня", status="PROCESSED", ASSIGNED_BY_ID=m1)
    world.robot("required_fields", "lead", lead, fields=["NAME", "SOURCE_DESCRIPTION"], send_back="Y")
    world.process()
    assert world.record("lead", lead)["STATUS_ID"] == "IN_PROCESS"  # the in-progress stage before
    task = world.tasks_for(f"L_{lead}")[-1]
    assert "NAME" in task["description"] and "SOURCE_DESCRIPTION" in task["description"]
    assert world.replies("required_fields")[-1]["return_values"]["complete"] == "N"

    deal = world.portal.act_add("deal", {"TITLE": "Сделка", "STAGE_ID": "EXECUTING", "ASSIGNED_BY_ID": m1})
    world.portal.act_move_stage("deal", deal, "LOSE")
    world.robot("close_reason", "deal", deal, reason_field="COMMENTS")
    world.process()
    # back to the stage it came from (crm.stagehistory.list)
    assert world.record("deal", deal)["STAGE_ID"] == "EXECUTING"
    assert any("причину" in m for m in world.messages_to(m1))
    world.portal.act_update("deal", deal, {"STAGE_ID": "LOSE", "COMMENTS": "Дорого"})
    world.robot("close_reason", "deal", deal, reason_field="COMMENTS")
    world.process()
    assert world.record("deal", deal)["STAGE_ID"] == "LOSE"
    with world.services.sessions() as s:
        assert close_reason_counts(s, world.portal_id) == {"Дорого": 1}


def test_reminder_before_the_appointment_is_replanned_when_the_date_moves(world):
    m1 = world.managers[0]
    from addon.bitrix.client import PortalClient

    with PortalClient(world.services, world.portal_id) as client:
        client.call("crm.lead.userfield.add", {"fields": {"FIELD_NAME": "MEASURE", "USER_TYPE_ID": "datetime",
                                                         "LABEL": "Дата замера"}})
    lead = world.lead("Замер", ASSIGNED_BY_ID=m1, UF_CRM_MEASURE="2026-11-09T15:00:00+03:00")  # Monday
    world.robot("appointment_reminder", "lead", lead, date_field="UF_CRM_MEASURE", days_before=1)
    world.process()
    world.advance(days=2)  # Wednesday: the client moves the measurement to Thursday the 12th
    world.portal.act_update("lead", lead, {"UF_CRM_MEASURE": "2026-11-12T11:00:00+03:00"})
    world.run_for(days=10)
    tasks = world.tasks_for(f"L_{lead}")
    assert len(tasks) == 1
    assert "12.11.2026" in tasks[0]["description"]
    assert tasks[0]["createdDate"].startswith("2026-11-11T09")  # one working day before, at 09:00


def test_ranking_cuts_the_weakest_three_next_month(world):
    managers = [world.portal.add_user(f"М{i}", "Рейтингов", department_id=world.department) for i in range(5)]
    for i, manager in enumerate(managers):
        for j in range(4):
            lead = world.lead(f"Лид {i}-{j}", ASSIGNED_BY_ID=manager)
            from addon.robots.store import add_record
            with world.services.sessions.begin() as s:
                add_record(s, world.portal_id, "assigned", f"LEAD_{lead}", world.now(), manager)
            if j < 4 - i:  # manager i converts 4 - i of 4
                world.robot("ranking_stage", "lead", lead, share="0.25")
    world.process()
    with world.services.sessions() as s:
        rows = ranking_report(s, world.portal_id, "2026-11", world.portal.tz)
    assert [r.user_id for r in rows] == managers
    world.portal.set_clock(dt.datetime(2026, 12, 1, 10, 0, tzinfo=world.portal.tz), frozen=True)
    leads = [world.lead(f"Декабрь {i}") for i in range(35)]
    for lead in leads:
        world.robot("distribute", "lead", lead, mode="ranking", users=managers)
    world.process()
    counts = [sum(int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == m for lead in leads) for m in managers]
    # weights 1 : 1 : 0.25 : 0.25 : 0.25 of 35 leads
    assert counts == [13, 13, 3, 3, 3]


def test_stuck_in_stage_is_listed_in_the_supervisors_daily_digest(world):
    m1 = world.managers[0]
    lead = world.lead("Завис", status="IN_PROCESS", ASSIGNED_BY_ID=m1)
    moved = world.lead("Движется", status="IN_PROCESS", ASSIGNED_BY_ID=m1)
    for item in (lead, moved):
        world.robot("stuck_in_stage", "lead", item, hours=24)
    world.process()
    world.advance(hours=3)
    world.portal.act_move_stage("lead", moved, "PROCESSED")
    world.run_for(days=2)
    digests = [m for m in world.messages_to(world.head) if "Зависли" in m]
    assert digests and "Завис" in digests[0] and "Движется" not in digests[0]


def test_a_forged_robot_call_is_refused_and_stores_nothing(world):
    world.portal.act_add("contact", {"NAME": "Первое событие приносит application_token"})
    assert world.portal.wait_for_deliveries(timeout=5)
    form = {"workflow_id": "x", "code": "nezabyt_distribute_lead", "document_id[0]": "crm",
            "document_id[1]": "CCrmDocumentLead", "document_id[2]": "LEAD_1", "event_token": "forged|token",
            "auth[member_id]": world.portal.member_id, "auth[application_token]": "not-the-token",
            "auth[domain]": world.portal.domain}
    answer = requests.post(f"{world.app_server.url}/robots/nezabyt_distribute_lead", data=form, timeout=10)
    assert answer.status_code == 401
    with world.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(StoredEvent).where(StoredEvent.source == "robot")) == 0
        assert s.scalar(select(func.count()).select_from(RobotTimer)) == 0
    assert world.process() == 0
    other = requests.post(f"{world.app_server.url}/robots/nezabyt_distribute_lead",
                          data={**form, "auth[member_id]": "unknown-portal"}, timeout=10)
    assert other.status_code == 401


def test_many_calls_cost_a_few_batched_requests(world):
    m1, _, m3, m4 = world.managers
    leads = [world.lead(f"Лид {i}") for i in range(40)]
    for lead in leads:
        world.robot("distribute", "lead", lead, mode="round_robin", users=[m1, m3, m4])
    before = world.portal.http_requests
    assert world.process() == 40
    # one batch of reads, user.get, 80 writes and replies in two batches, 40 messages in one
    assert world.portal.http_requests - before <= 6
    assert len(world.replies("distribute")) == 40
    owners = [int(world.record("lead", lead)["ASSIGNED_BY_ID"]) for lead in leads]
    assert {u: owners.count(u) for u in set(owners)} == {m1: 14, m3: 13, m4: 13}


def test_deal_pipeline_distribution_and_known_phone_on_the_deals_contact(world):
    m1, _, m3, _ = world.managers
    known = world.portal.act_add("contact", {"NAME": "Старый", "ASSIGNED_BY_ID": m3,
                                             "PHONE": [{"VALUE": "+7 917 000-11-22", "VALUE_TYPE": "WORK"}]})
    fresh = world.portal.act_add("contact", {"NAME": "Новый", "PHONE": [{"VALUE": "89170001122"}]})
    deal = world.portal.act_add("deal", {"TITLE": "Кухня", "STAGE_ID": "NEW", "CONTACT_ID": fresh})
    world.robot("distribute", "deal", deal, mode="round_robin", users=[m1, m3])
    world.process()
    assert int(world.record("deal", deal)["ASSIGNED_BY_ID"]) == m1
    world.robot("one_client_per_phone", "deal", deal)
    world.process()
    assert int(world.record("deal", deal)["ASSIGNED_BY_ID"]) == m3  # the known client's manager
    assert world.replies("one_client_per_phone_deal")[-1]["return_values"]["duplicate_id"] == str(known)
    assert world.tasks_for(f"D_{deal}")[-1]["responsibleId"] == str(m3)


def test_sla_touch_by_comment_stage_change_or_own_edit(world):
    m1, _, m3, _ = world.managers
    commented = world.lead("Комментарий", ASSIGNED_BY_ID=m1)
    moved = world.lead("Стадия", ASSIGNED_BY_ID=m1)
    edited = world.lead("Правка", ASSIGNED_BY_ID=m1)
    other_edit = world.lead("Чужая правка", ASSIGNED_BY_ID=m1)
    for lead in (commented, moved, edited, other_edit):
        world.robot("take_in_work", "lead", lead, minutes=15, users=[m1, m3])
    world.process()
    world.advance(minutes=3)
    from addon.bitrix.client import PortalClient

    with PortalClient(world.services, world.portal_id) as client:
        client.call("crm.timeline.comment.add", {"fields": {"ENTITY_ID": commented, "ENTITY_TYPE": "lead",
                                                            "COMMENT": "Перезвоню в 15:00"}})
    world.portal.act_move_stage("lead", moved, "IN_PROCESS", user_id=m1)
    world.portal.act_update("lead", edited, {"COMMENTS": "клиент просит перезвонить"}, user_id=m1)
    world.portal.act_update("lead", other_edit, {"COMMENTS": "правка администратора"}, user_id=1)
    world.advance(minutes=15)
    assert world.fire() == 4
    assert [int(world.record("lead", x)["ASSIGNED_BY_ID"]) for x in (commented, moved, edited, other_edit)] == [
        m1, m1, m1, m3]
    assert [r["return_values"]["sla_met"] for r in world.replies("take_in_work")] == ["Y", "Y", "Y"]


def test_stage_gate_refuses_an_item_that_skipped_the_ranking_stage(world):
    m1 = world.managers[0]
    honest = world.lead("Встреча была", status="IN_PROCESS", ASSIGNED_BY_ID=m1)
    skipper = world.lead("Перепрыгнул", status="IN_PROCESS", ASSIGNED_BY_ID=m1)
    world.portal.bind_stage_robot("lead", "PROCESSED", "nezabyt_ranking_stage_lead", {"share": "0.5"})
    world.portal.bind_stage_robot("lead", "CONVERTED", "nezabyt_stage_gate_lead",
                                  {"required_stage": "PROCESSED", "previous_stage": "IN_PROCESS"})
    world.portal.act_move_stage("lead", honest, "PROCESSED", user_id=m1)
    assert world.portal.wait_for_deliveries(timeout=5)
    world.process()
    world.portal.act_move_stage("lead", honest, "CONVERTED", user_id=m1)
    world.portal.act_move_stage("lead", skipper, "CONVERTED", user_id=m1)
    assert world.portal.wait_for_deliveries(timeout=5)
    world.process()
    assert world.record("lead", honest)["STATUS_ID"] == "CONVERTED"
    assert world.record("lead", skipper)["STATUS_ID"] == "IN_PROCESS"
    assert any("Перепрыгнул" in m for m in world.messages_to(m1))


def test_sla_hands_out_an_item_whose_responsible_is_deactivated(world):
    _, m2, m3, _ = world.managers
    lead = world.lead("Без живого ответственного", ASSIGNED_BY_ID=m2)
    world.robot("take_in_work", "lead", lead, minutes=15, users=[m2, m3])
    world.process()
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == m3
    world.advance(minutes=16)
    assert world.fire() == 1  # m3 did nothing; the only other manager is deactivated: nobody to take it
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == m3
    assert world.replies("take_in_work")[-1]["return_values"]["sla_met"] == "N"


def test_a_repeat_request_never_brings_back_a_junk_client(world):
    old = world.lead("Спам", phone="+79035551234", status="JUNK", ASSIGNED_BY_ID=world.inactive)
    lead = world.lead("Снова спам", phone="8 903 555-12-34", status="IN_PROCESS", ASSIGNED_BY_ID=world.managers[0])
    world.robot("one_client_per_phone", "lead", lead, ignore_stages="JUNK")
    world.process()
    assert world.record("lead", lead)["STATUS_ID"] == "IN_PROCESS"
    reply = world.replies("phone")[-1]["return_values"]
    assert (reply["duplicate_id"], reply["outcome"]) == (str(old), "kept")


def test_a_call_for_an_unknown_robot_is_refused_once(world):
    with world.services.sessions.begin() as s:
        make_robot_call(s, world.portal_id, "nezabyt_unknown_lead", "LEAD_1", "t|A1|x", dedupe_key="robot:test-unknown")
    world.process()
    with world.services.sessions() as s:
        event = s.scalars(select(StoredEvent).where(StoredEvent.dedupe_key == "robot:test-unknown")).one()
    assert event.processed_at is not None and event.error.startswith("refused")
    assert world.process() == 0


def test_timers_of_an_uninstalled_portal_are_cancelled(world):
    lead = world.lead("Лид", ASSIGNED_BY_ID=world.managers[0])
    world.robot("take_in_work", "lead", lead, minutes=15, users=[world.managers[0], world.managers[2]])
    world.process()
    world.portal.uninstall_app(clean=False)
    assert world.portal.wait_for_deliveries(timeout=5)
    world.advance(minutes=20)
    assert world.fire() == 0
    with world.services.sessions() as s:
        assert s.scalars(select(RobotTimer.status)).all() == ["cancelled"]
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == world.managers[0]


def test_a_new_sla_watch_on_the_same_item_ends_the_old_one(world):
    m1, _, m3, _ = world.managers
    lead = world.lead("Лид", ASSIGNED_BY_ID=m1)
    world.robot("take_in_work", "lead", lead, minutes=15, users=[m1, m3])
    world.process()
    world.advance(minutes=5)
    world.robot("take_in_work", "lead", lead, minutes=15, users=[m1, m3])
    world.process()
    assert [r["log_message"] for r in world.replies("take_in_work")] == ["SLA watch replaced by a new one"]
    world.advance(minutes=11)
    assert world.fire() == 0  # the first watch is gone; the second is due at minute 20
    world.advance(minutes=5)
    assert world.fire() == 1
    assert int(world.record("lead", lead)["ASSIGNED_BY_ID"]) == m3


def test_reminder_on_a_date_field_the_same_day(world):
    m1 = world.managers[0]
    # a deal's start date is a date without a time: the reminder on the day itself (0 working days before)
    deal = world.portal.act_add("deal", {"TITLE": "Встреча", "STAGE_ID": "EXECUTING", "ASSIGNED_BY_ID": m1,
                                         "BEGINDATE": "2026-11-04"})
    world.robot("appointment_reminder", "deal", deal, date_field="BEGINDATE", days_before=0, title="Встреча сегодня")
    world.process()
    world.run_for(days=4)
    tasks = world.tasks_for(f"D_{deal}")
    assert [t["title"] for t in tasks] == ["Встреча сегодня"]
    assert tasks[0]["createdDate"].startswith("2026-11-04T09") and "04.11.2026" in tasks[0]["description"]


def test_a_robot_registered_without_use_subscription_gets_no_reply_and_nothing_fails(world):
    # bizproc-event-send.md: an event can be sent only for a robot registered with USE_SUBSCRIPTION Y;
    # the devportal refuses any other reply (ACCESS_DENIED), as the docs allow.
    from sqlalchemy import select

    from addon.models import Outbox

    m1 = world.managers[0]
    lead = world.lead("Без ответа", status="IN_PROCESS", ASSIGNED_BY_ID=m1)
    world.robot("call_cadence", "lead", lead, final_stage="JUNK")
    world.process()
    world.run_for(days=3)
    assert world.tasks_for(f"L_{lead}")  # the robot worked
    assert not [c for c in world.portal.calls if c["method"] == "bizproc.event.send"]
    with world.services.sessions() as session:
        assert [r.method for r in session.scalars(select(Outbox).where(Outbox.status == "failed"))] == []


@pytest.mark.parametrize("code", ["PAYMENT_REQUIRED", "OPERATION_TIME_LIMIT"])
def test_a_read_the_portal_refuses_for_now_leaves_the_robot_call_undecided(world, code):
    # A stage gate reads the deal's stage history. Refused for a passing reason, it must not be read
    # as "no history" (that would send a deal that did pass the stage back): the call waits, spends
    # none of its attempts, and decides right once the portal answers.
    from sqlalchemy import select

    from addon.models import Portal, StoredEvent

    m1 = world.managers[0]
    deal = world.portal.act_add("deal", {"TITLE": "Прошла", "STAGE_ID": "PREPARATION", "ASSIGNED_BY_ID": m1})
    world.portal.act_move_stage("deal", deal, "EXECUTING")
    world.portal.act_move_stage("deal", deal, "FINAL_INVOICE")
    world.portal.set_faults(method_errors={"crm.stagehistory.list": code})
    world.robot("stage_gate", "deal", deal, required_stage="EXECUTING")
    for _ in range(7):  # more passes than a call's attempts
        assert world.process() == 0
    assert world.record("deal", deal)["STAGE_ID"] == "FINAL_INVOICE"
    assert not world.replies("stage_gate") and not world.messages_to(m1)
    with world.services.sessions() as s:
        event = s.scalars(select(StoredEvent).where(StoredEvent.source == "robot")).one()
        assert event.processed_at is None and event.attempts == 0 and code in event.error
        s.get(Portal, world.portal_id).parked_methods = {}  # the parked method is free again
        s.commit()
    world.portal.set_faults()
    assert world.process() == 1
    assert world.record("deal", deal)["STAGE_ID"] == "FINAL_INVOICE"
    assert world.replies("stage_gate")[-1]["return_values"]["passed"] == "Y"


def test_a_missing_method_or_item_still_reads_as_empty():
    from addon.bitrix.errors import PortalError
    from addon.robots.reads import reads_as_empty

    assert reads_as_empty(PortalError("NOT_FOUND", "Not found", 400))
    assert reads_as_empty(PortalError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404))
    assert reads_as_empty(PortalError("insufficient_scope", "", 401))
    for code, status in (("QUERY_LIMIT_EXCEEDED", 503), ("INTERNAL_SERVER_ERROR", 500), ("OVERLOAD_LIMIT", 503),
                         ("PAYMENT_REQUIRED", 402), ("OPERATION_TIME_LIMIT", 429), ("NETWORK_ERROR", None)):
        assert not reads_as_empty(PortalError(code, "", status)), code
