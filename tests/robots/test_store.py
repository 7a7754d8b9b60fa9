"""Robot storage helpers: the ranking report, close reasons, absences, state under lock."""
import datetime as dt

from addon.db import unit_of_work
from addon.robots.store import (absent_users, add_record, close_reason_counts, get_state, mark_absent, put_state,
                                ranking_report, ranking_weights_for)
from tests.factories import make_portal


def portal(services) -> int:
    with unit_of_work(services.sessions) as s:
        return make_portal(s).id


def test_ranking_counts_an_item_for_its_last_holder_and_weights_stay_all_month(services):
    pid = portal(services)
    t = dt.datetime(2026, 10, 10, 9)
    with unit_of_work(services.sessions) as s:
        add_record(s, pid, "assigned", "LEAD_1", t, 5)
        add_record(s, pid, "assigned", "LEAD_1", t + dt.timedelta(minutes=16), 6)  # handed on by the SLA
        add_record(s, pid, "assigned", "LEAD_2", t, 5)
        add_record(s, pid, "assigned", "DEAL_3", t, 7)
        add_record(s, pid, "assigned", "LEAD_9", dt.datetime(2026, 11, 1, 9), 7)  # next month
        add_record(s, pid, "reached", "LEAD_1", t + dt.timedelta(days=3), 6, "MEETING")
    with services.sessions() as s:
        rows = ranking_report(s, pid, "2026-10", dt.timezone.utc, "lead")
        assert [(r.user_id, r.new_items, r.converted) for r in rows] == [(6, 1, 1), (5, 1, 0)]
    with unit_of_work(services.sessions) as s:
        put_state(s, pid, "ranking_config:lead", {"share": 0.3})
        assert ranking_weights_for(s, pid, "2026-11", dt.timezone.utc, "lead") == {6: 1.0, 5: 0.3}
    with unit_of_work(services.sessions) as s:
        add_record(s, pid, "reached", "LEAD_2", t, 5, "MEETING")  # late data does not change this month's shares
        assert ranking_weights_for(s, pid, "2026-11", dt.timezone.utc, "lead") == {6: 1.0, 5: 0.3}


def test_reasons_absences_and_locked_state(services):
    pid = portal(services)
    with unit_of_work(services.sessions) as s:
        for reason in ("Дорого", "Дорого", "Не дозвонились"):
            add_record(s, pid, "close_reason", "DEAL_1", dt.datetime(2026, 11, 3), 5, reason)
        add_record(s, pid, "close_reason", "LEAD_2", dt.datetime(2026, 11, 3), 5, "Спам")
        mark_absent(s, pid, 5)
        mark_absent(s, pid, 6)
        mark_absent(s, pid, 5, absent=False)
        assert get_state(s, pid, "pool:lead:default", lock=True) == {}
        put_state(s, pid, "pool:lead:default", {"last_user": 6})
    with services.sessions() as s:
        assert close_reason_counts(s, pid) == {"Дорого": 2, "Не дозвонились": 1, "Спам": 1}
        assert close_reason_counts(s, pid, document_type="lead") == {"Спам": 1}
        assert close_reason_counts(s, pid, since=dt.datetime(2026, 11, 4)) == {}
        assert absent_users(s, pid) == {6}
        assert get_state(s, pid, "pool:lead:default") == {"last_user": 6}
