"""The robots' pure rules: distribution, ranking, SLA, cadence, reminders, fields, reasons."""
import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from addon.robots.logic import (PoolState, RankRow, SlaCheck, call_cadence, close_reason, distribute,
                                eligible_managers, is_stuck, missing_fields, monthly_ranking, previous_month,
                                ranking_weights, reminder_moment, reminder_plan, repeat_request_branch,
                                sla_next_step, sla_verdict, working_days_before)

MSK = ZoneInfo("Europe/Moscow")


def run(mode, pool, active, picks, absent_at=None, **kw):
    state, chosen = PoolState(), []
    for i in range(picks):
        absent = (absent_at or {}).get(i, ())
        user, state = distribute(mode, pool, active, state, absent=absent, **kw)
        chosen.append(user)
    return chosen, state


def test_round_robin_skips_deactivated():
    chosen, _ = run("round_robin", [1, 2, 3, 4], active={1, 2, 4}, picks=6)
    assert chosen == [1, 2, 4, 1, 2, 4]
    assert 3 not in chosen


def test_round_robin_fair_after_absence_no_backlog():
    # user 2 is absent for picks 2..7; on return he takes his normal turn, no catch-up run of items
    absent = {i: {2} for i in range(2, 8)}
    chosen, _ = run("round_robin", [1, 2, 3], active={1, 2, 3}, picks=12, absent_at=absent)
    assert chosen[:2] == [1, 2]
    assert 2 not in chosen[2:8]
    after = chosen[8:]
    assert after.count(2) <= 2 and Counter(after)[1] >= 1 and Counter(after)[3] >= 1
    # never twice in a row for the returning manager
    assert all(not (a == b == 2) for a, b in zip(after, after[1:]))


def test_nobody_available():
    user, state = distribute("round_robin", [1, 2], active={1, 2}, state=PoolState(), absent={1, 2})
    assert user is None and state == PoolState()


def test_least_loaded_with_rotation_on_ties():
    loads = {1: 5, 2: 1, 3: 1}
    user, state = distribute("least_loaded", [1, 2, 3], {1, 2, 3}, PoolState(), loads=loads)
    assert user == 2
    user, _ = distribute("least_loaded", [1, 2, 3], {1, 2, 3}, state, loads=loads)
    assert user == 3  # tie between 2 and 3: the rotation goes on past the last chosen


def test_weighted_share_and_no_debt_after_absence():
    weights = {1: 1.0, 2: 1.0, 3: 0.5}
    chosen, _ = run("ranking", [1, 2, 3], {1, 2, 3}, picks=50, weights=weights)
    c = Counter(chosen)
    assert c[1] == 20 and c[2] == 20 and c[3] == 10
    # manager 2 absent for 30 picks: afterwards he does not get a burst of items
    absent = {i: {2} for i in range(0, 30)}
    chosen, _ = run("ranking", [1, 2, 3], {1, 2, 3}, picks=40, weights=weights, absent_at=absent)
    tail = chosen[30:]
    assert Counter(tail)[2] <= 5
    assert all(not (a == b == 2) for a, b in zip(tail, tail[1:]))


def test_exclude_and_state_roundtrip():
    user, state = distribute("ranking", [5, 6], {5, 6}, PoolState(), exclude={5})
    assert user == 6
    assert PoolState.from_dict(state.to_dict()) == state
    assert eligible_managers([1, 1, 2, 3], {1, 2, 3}, absent={3}) == [1, 2]
    with pytest.raises(ValueError):
        distribute("random", [1], {1}, PoolState())


def test_monthly_ranking_and_weights():
    assigned = [(1, "L1"), (1, "L2"), (2, "L3"), (2, "L4"), (3, "L5"), (3, "L6"), (4, "L7"), (4, "L8"),
                (5, "L9"), (5, "L10")]
    reached = {"L1", "L2", "L3", "L5", "L7"}
    rows = monthly_ranking(assigned, reached)
    assert [r.user_id for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].conversion == 1.0 and rows[-1].conversion == 0.0
    weights = ranking_weights(rows, weak_share=0.3)
    assert weights == {1: 1.0, 2: 1.0, 3: 0.3, 4: 0.3, 5: 0.3}
    # a team of two: only one is cut
    assert ranking_weights([RankRow(1, 2, 2), RankRow(2, 2, 0)]) == {1: 1.0, 2: 0.5}
    assert previous_month("2026-01") == "2025-12"


def test_sla_verdicts():
    at = dt.datetime(2026, 11, 2, 10, 0)
    base = dict(exists=True, responsible=7, stage="NEW")
    assert sla_verdict(SlaCheck(**base), 7, at, "NEW") == "breach"
    assert sla_verdict(SlaCheck(**base, activity_times=(at + dt.timedelta(minutes=3),)), 7, at, "NEW") == "met"
    assert sla_verdict(SlaCheck(**base, activity_times=(at - dt.timedelta(days=1),)), 7, at, "NEW") == "breach"
    assert sla_verdict(SlaCheck(**base, comment_times=(at,)), 7, at, "NEW") == "met"
    assert sla_verdict(SlaCheck(**base, edited_by_responsible_at=at + dt.timedelta(minutes=1)), 7, at, "NEW") == "met"
    assert sla_verdict(SlaCheck(**base, edited_by_responsible_at=at - dt.timedelta(minutes=1)), 7, at, "NEW") == "breach"
    assert sla_verdict(SlaCheck(exists=True, responsible=7, stage="IN_PROCESS"), 7, at, "NEW") == "met"
    assert sla_verdict(SlaCheck(exists=True, responsible=9, stage="NEW"), 7, at, "NEW") == "gone"
    assert sla_verdict(SlaCheck(exists=False, responsible=None, stage=None), 7, at, "NEW") == "gone"
    assert [sla_next_step(i, 2) for i in range(3)] == ["reassign", "reassign", "give_up"]


def test_cadence_counts_days_and_hours():
    start = dt.datetime(2026, 11, 2, 10, 30, tzinfo=MSK)  # a Monday
    slots = call_cadence(start)
    assert len(slots) == 13
    offsets = [(s.start.date() - start.date()).days for s in slots]
    assert offsets[:3] == [2, 4, 6]
    for week in range(1, 4):  # two a week, one at a weekend
        days = [s.start.date() for s in slots if 7 * week <= (s.start.date() - start.date()).days < 7 * week + 7]
        assert len(days) == 2 and sum(d.weekday() >= 5 for d in days) == 1
    for week in range(4, 8):
        assert sum(7 * week <= o < 7 * week + 7 for o in offsets) == 1
    assert max(offsets) < 56
    for s in slots:
        assert s.start.tzinfo is MSK
        if s.start.weekday() >= 5:
            assert s.start.hour >= 11
        else:
            assert (s.start.hour, s.end.hour) in ((13, 15), (19, 21))
    assert len({s.start.hour for s in slots if s.start.weekday() < 5}) == 2  # different times of day


def test_working_days_and_reminder():
    friday, monday = dt.date(2026, 11, 6), dt.date(2026, 11, 9)
    assert working_days_before(monday, 1) == friday
    assert working_days_before(monday, 0) == monday
    assert working_days_before(dt.date(2026, 11, 11), 2) == monday
    appointment = dt.datetime(2026, 11, 9, 15, 0, tzinfo=MSK)
    assert reminder_moment(appointment, 1) == dt.datetime(2026, 11, 6, 9, 0, tzinfo=MSK)
    assert reminder_plan(appointment, 1, dt.datetime(2026, 11, 5, 12, tzinfo=MSK)) == "wait"
    assert reminder_plan(appointment, 1, dt.datetime(2026, 11, 6, 9, tzinfo=MSK)) == "now"
    assert reminder_plan(appointment, 1, dt.datetime(2026, 11, 10, tzinfo=MSK)) == "none"
    assert reminder_plan(None, 1, dt.datetime(2026, 11, 5, tzinfo=MSK)) == "none"


def test_fields_reasons_stuck_and_repeat():
    item = {"NAME": "Иван", "SOURCE_DESCRIPTION": " ", "UF_CRM_TYPE": [], "PHONE": [{"VALUE": ""}],
            "UF_CRM_REASON": "45", "OPPORTUNITY": 0}
    assert missing_fields(item, ["NAME", "source_description", "UF_CRM_TYPE", "PHONE", "EMAIL", "OPPORTUNITY"]) == [
        "source_description", "UF_CRM_TYPE", "PHONE", "EMAIL"]
    assert close_reason(item, "uf_crm_reason", {"45": "Дорого"}) == "Дорого"
    assert close_reason(item, "UF_CRM_OTHER") is None
    t0 = dt.datetime(2026, 11, 2, 9)
    assert is_stuck(t0, "S1", "S1", t0 + dt.timedelta(hours=24), 24)
    assert not is_stuck(t0, "S1", "S2", t0 + dt.timedelta(hours=48), 24)
    assert not is_stuck(t0, "S1", "S1", t0 + dt.timedelta(hours=23), 24)
    assert repeat_request_branch(5, {5, 6}) == "owner"
    assert repeat_request_branch(5, {6}) == "return"
    assert repeat_request_branch(None, {6}) == "return"


@pytest.mark.parametrize("weekday", range(7))
def test_cadence_holds_from_any_start_day(weekday):
    start = dt.datetime(2026, 11, 2 + weekday, 20, 45, tzinfo=MSK)
    slots = call_cadence(start)
    assert len(slots) == 13
    assert all(a.start < b.start for a, b in zip(slots, slots[1:]))
    assert all(s.start.date() > start.date() for s in slots)  # never on the day of the unanswered call
    for week in range(1, 4):
        in_week = [s for s in slots if 7 * week <= (s.start.date() - start.date()).days < 7 * week + 7]
        assert len(in_week) == 2 and sum(s.start.weekday() >= 5 for s in in_week) == 1
        assert abs((in_week[1].start.date() - in_week[0].start.date()).days) >= 2
