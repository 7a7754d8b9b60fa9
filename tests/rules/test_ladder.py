"""Due and warning dates, decay with exact catch-up, calls — DESIGN §1 and the seed-003 examples."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from addon.options import IN_WORK, LOST, NEW, Options, StatusDef
from addon.rules import (Entity, Step, base_date, dates, decay_through, due_date, entity_of, new_entity,
                         next_status, record_call, row_values, rule_code, should_warn, simulate,
                         warn_date)

D0 = dt.date(2026, 3, 2)  # a Monday


def d(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


OPTS = Options()


def test_due_date_is_base_plus_the_days_of_the_status():
    assert due_date(OPTS, Entity(NEW, d(0))) == d(10)
    assert due_date(OPTS, Entity("HOT", d(0))) == d(30)
    assert due_date(OPTS, Entity("WARM", d(0))) == d(60)
    assert due_date(OPTS, Entity("COLD", d(0))) == d(90)


@pytest.mark.parametrize("status", [None, IN_WORK, LOST])
def test_empty_in_work_and_lost_have_no_due_date(status):
    e = Entity(status, d(0), last_call_on=d(1))
    assert due_date(OPTS, e) is None
    assert warn_date(OPTS, e) is None
    assert decay_through(OPTS, e, d(10_000)) == (e, [])


def test_reset_on_calls_counts_from_the_later_of_set_day_and_last_call():
    e = Entity(NEW, d(0), last_call_on=d(4))
    assert base_date(OPTS, e) == d(4)
    assert due_date(OPTS, e) == d(14)
    # An older call than the set day does not move the base back.
    assert base_date(OPTS, replace(e, last_call_on=d(-5))) == d(0)
    off = replace(OPTS, reset_on_calls=False)
    assert base_date(off, e) == d(0)
    assert due_date(off, e) == d(10)


def test_warning_is_warn_days_before_the_due_date_never_before_the_base():
    assert warn_date(OPTS, Entity("HOT", d(0))) == d(27)
    per_status = replace(OPTS, statuses=tuple(
        replace(s, warn_days=7) if s.code == "WARM" else s for s in OPTS.statuses))
    assert warn_date(per_status, Entity("WARM", d(0))) == d(53)
    assert warn_date(per_status, Entity("HOT", d(0))) == d(27)  # the default for the others
    short = replace(OPTS, default_warn_days=20)
    assert warn_date(short, Entity(NEW, d(0))) == d(0)  # 10 - 20 days: clamped to the base
    assert warn_date(replace(OPTS, default_warn_days=0), Entity(NEW, d(0))) is None


def test_warning_day_is_told_once_and_a_missed_run_still_warns():
    e = Entity("HOT", d(0))  # due d(30), warn d(27)
    assert [n for n in range(40) if should_warn(OPTS, e, d(n))] == [27]
    assert should_warn(OPTS, e, d(29), last_run_on=d(25))  # runs of d26..d28 missed
    assert not should_warn(OPTS, e, d(29), last_run_on=d(27))  # already warned on d27
    assert not should_warn(OPTS, e, d(30), last_run_on=d(25))  # too late: it decays today


def test_decay_steps_one_at_a_time_each_dated_its_due_date():
    e, steps = decay_through(OPTS, Entity("HOT", d(0)), d(365))
    assert steps == [Step("HOT", "WARM", d(30), "decay"), Step("WARM", "COLD", d(90), "decay"),
                     Step("COLD", LOST, d(180), "decay")]
    assert e.status == LOST and e.status_set_on == d(180) and e.previous_status == "COLD"


def test_a_step_happens_at_the_start_of_its_due_date():
    assert decay_through(OPTS, Entity(NEW, d(0)), d(9))[1] == []
    assert decay_through(OPTS, Entity(NEW, d(0)), d(10))[1] == [Step(NEW, LOST, d(10), "decay")]


def test_catch_up_after_missed_runs_equals_daily_runs():
    start = Entity("HOT", d(0), last_call_on=d(3))
    once = decay_through(OPTS, start, d(200))
    e, steps = start, []
    for n in range(201):
        e, more = decay_through(OPTS, e, d(n))
        steps += more
    assert (e, steps) == once


def test_seed_003_new_with_daily_calls_stays_new_then_lost_10_days_after_the_last_call():
    """Seed 003: NEW, 10 days; the manager calls every day → stays NEW; stops → LOST 10 days after."""
    calls = [(d(n), "call", {}) for n in range(0, 25)]
    e, steps = simulate(OPTS, Entity(NEW, d(0)), calls, [d(n) for n in range(60)], d(33))
    assert e.status == NEW and steps == []
    e, steps = simulate(OPTS, Entity(NEW, d(0)), calls, [d(n) for n in range(60)], d(34))
    assert e.status == LOST
    assert steps == [Step(NEW, LOST, d(34), "decay")]  # the last call was d(24)


def test_a_call_on_the_due_date_is_too_late_for_that_step():
    e, steps = record_call(OPTS, Entity(NEW, d(0)), d(10))
    assert steps == [Step(NEW, LOST, d(10), "decay")]
    assert e.status == LOST and e.last_call_on == d(10)
    e, steps = record_call(OPTS, Entity("HOT", d(0)), d(30))
    assert e.status == "WARM" and due_date(OPTS, e) == d(90)  # the call restarts WARM's timer


def test_a_call_the_day_before_the_due_date_saves_the_status():
    e, steps = record_call(OPTS, Entity(NEW, d(0)), d(9))
    assert steps == [] and e.status == NEW and due_date(OPTS, e) == d(19)


def test_last_call_never_moves_backwards():
    e, _ = record_call(OPTS, Entity("HOT", d(0), last_call_on=d(20)), d(5))
    assert e.last_call_on == d(20)


def test_calls_do_not_reset_when_the_option_is_off():
    off = replace(OPTS, reset_on_calls=False)
    calls = [(d(n), "call", {}) for n in range(0, 10)]
    e, steps = simulate(off, Entity(NEW, d(0)), calls, [], d(10))
    assert e.status == LOST and steps == [Step(NEW, LOST, d(10), "decay")]


def test_lost_is_terminal():
    e, steps = decay_through(OPTS, Entity(LOST, d(0), last_call_on=d(1)), d(5000))
    assert e.status == LOST and steps == []
    assert next_status(OPTS, LOST) is None


def test_custom_chain_is_the_admins_order():
    opts = replace(OPTS, statuses=(
        StatusDef(NEW, "Новый", system=True, days=5), StatusDef(IN_WORK, "В работе", system=True),
        StatusDef("VIP", "VIP", days=7), StatusDef("HOT", "Горячий", days=3),
        StatusDef(LOST, "Пропал", system=True)))
    _, steps = decay_through(opts, Entity("VIP", d(0)), d(100))
    assert [(s.from_status, s.to_status, s.on) for s in steps] == [("VIP", "HOT", d(7)), ("HOT", LOST, d(10))]


def test_a_deleted_custom_status_is_timed_as_the_top_of_the_chain():
    opts = replace(OPTS, statuses=tuple(s for s in OPTS.statuses if s.code != "WARM"))
    assert rule_code(opts, "WARM") == "HOT"
    e = Entity("WARM", d(0))
    assert dates(opts, e) == (d(30), d(27))
    _, steps = decay_through(opts, e, d(30))
    assert steps == [Step("WARM", "COLD", d(30), "decay")]  # HOT's next, under the stored code


def test_empty_chain_falls_back_to_new_timing_for_unknown_codes():
    opts = replace(OPTS, statuses=tuple(s for s in OPTS.statuses if s.system))
    _, steps = decay_through(opts, Entity("GONE", d(0)), d(100))
    assert steps == [Step("GONE", LOST, d(10), "decay")]


def test_new_entities_get_new_dated_from_their_creation():
    assert new_entity(OPTS, d(3)) == Entity(NEW, d(3))
    assert new_entity(replace(OPTS, new_for_new_entities=False), d(3)) is None


def test_the_string_empty_means_the_empty_field():
    e = Entity("EMPTY", d(0))
    assert due_date(OPTS, e) is None and decay_through(OPTS, e, d(100)) == (e, [])


def test_entity_from_and_back_to_a_service_table_row():
    from types import SimpleNamespace

    row = SimpleNamespace(status="HOT", status_set_on=d(0), last_call_on=d(2), previous_status=NEW,
                          status_before_deal=None, open_deals=None, title="ignored")
    e = entity_of(row)
    assert e == Entity("HOT", d(0), last_call_on=d(2), previous_status=NEW)
    values = row_values(OPTS, e)
    assert values == {"status": "HOT", "status_set_on": d(0), "last_call_on": d(2), "previous_status": NEW,
                      "status_before_deal": None, "open_deals": 0, "due_on": d(32), "warn_on": d(29)}


def test_step_causes_fit_the_history_table_and_the_ones_by_a_person_are_causes():
    from addon.engine import BY_USER_CAUSES
    from addon.models import StatusHistory
    from addon.rules import CAUSES

    width = StatusHistory.__table__.c.cause.type.length
    assert all(len(cause) <= width for cause in CAUSES)
    assert set(BY_USER_CAUSES) <= set(CAUSES)
    assert {"decay", "deal", "new"}.isdisjoint(BY_USER_CAUSES)
