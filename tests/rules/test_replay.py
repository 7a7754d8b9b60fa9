"""A call processed after the daily run that it should have prevented ends exactly where it would
have, had it been processed in time (DESIGN §1: the order of runs and events must not matter)."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon.options import IN_WORK, LOST, NEW, Options, StatusDef
from addon.rules import Entity, Step, decay_through, record_call
from addon.rules.replay import late_call

D0 = dt.date(2026, 3, 1)


def d(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def in_time(opts, e, call_day, today):
    e1, s1 = decay_through(opts, e, call_day)
    e2, s2 = record_call(opts, e1, call_day)
    e3, s3 = decay_through(opts, e2, today)
    return e3, s1 + s2 + s3


def late(opts, e, call_day, today):
    """What the worker does: the run of `today` already happened, the call comes afterwards."""
    before_call, _ = decay_through(opts, e, call_day)  # the state history shows on the call's day
    now, steps = decay_through(opts, e, today)
    decays_since = [s for s in steps if s.on > call_day]
    return late_call(opts, now, call_day, today, decays_since,
                     prior_set_on=before_call.status_set_on, prior_previous=before_call.previous_status)


def test_seed_example_call_the_day_before_loss_keeps_new():
    # New, 10 days; the manager called on day 9, but the event is processed after day 10's run.
    opts = Options()
    e = Entity(NEW, d(0))
    r = late(opts, e, d(9), d(10))
    assert r.undone == (Step(NEW, LOST, d(10), "decay"),)
    assert r.entity.status == NEW and r.entity.last_call_on == d(9)
    assert r.steps == ()


def test_call_on_the_due_date_is_too_late_even_when_late():
    opts = Options()
    r = late(opts, Entity(NEW, d(0)), d(10), d(11))
    assert r.entity.status == LOST and r.undone == ()


def test_replay_decays_again_from_the_new_base():
    opts = Options()
    e = Entity("HOT", d(0))  # HOT 30 → WARM 60 → COLD 90 → LOST
    r = late(opts, e, d(29), d(100))
    # In time: due moves to 29 + 30 = 59 → WARM on 59, COLD on 119 — not yet on day 100.
    assert r.entity.status == "WARM" and r.entity.status_set_on == d(59)
    assert [s.on for s in r.undone] == [d(30), d(90)]


def test_non_decay_history_is_refused():
    with pytest.raises(ValueError):
        late_call(Options(), Entity(NEW, d(0)), d(1), d(2), [Step(NEW, "HOT", d(2), "manager")], d(0), None)


@st.composite
def scenario(draw):
    chain = [StatusDef(f"C{i}", f"C{i}", days=draw(st.integers(1, 12))) for i in range(draw(st.integers(0, 3)))]
    opts = Options(statuses=(StatusDef(NEW, "N", system=True, days=draw(st.integers(1, 12))),
                             StatusDef(IN_WORK, "W", system=True), *chain, StatusDef(LOST, "L", system=True)),
                   reset_on_calls=draw(st.booleans()))
    status = draw(st.sampled_from([NEW, *opts.custom_chain, LOST]))
    e = Entity(status, d(-draw(st.integers(0, 10))),
               last_call_on=draw(st.none() | st.integers(-15, 0).map(d)),
               previous_status=draw(st.sampled_from([None, NEW])))
    call_day = d(draw(st.integers(0, 40)))
    today = call_day + dt.timedelta(days=draw(st.integers(0, 40)))
    return opts, e, call_day, today


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_late_call_equals_call_in_time(case):
    opts, e, call_day, today = case
    expected, _ = in_time(opts, e, call_day, today)
    got = late(opts, e, call_day, today).entity
    assert got == expected
