"""Property tests of the ladder: schedule independence, calls never hurt, exact reverts, LOST is
terminal, IN_WORK never decays. Options, histories and schedules are generated."""
from __future__ import annotations

import datetime as dt

from hypothesis import event, given, settings
from hypothesis import strategies as st

from addon.options import IN_WORK, LOST, NEW, Options, StatusDef
from addon.rules import (Entity, apply_event, check_manual_change, decay_through, due_date,
                         record_call, revert_target, should_warn, simulate, warn_date)

D0 = dt.date(2026, 1, 1)
HORIZON = 70
EXAMPLES = settings(max_examples=200, deadline=None)


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


@st.composite
def options(draw) -> Options:
    chain_len = draw(st.integers(0, 3))
    custom = []
    for i in range(chain_len):
        days = draw(st.integers(1, 15))
        custom.append(StatusDef(f"C{i}", f"Custom {i}", days=days,
                                warn_days=draw(st.none() | st.integers(0, days - 1)),
                                reasons=draw(st.sampled_from([(), ("price", "rival")]))))
    statuses = (StatusDef(NEW, "New", system=True, days=draw(st.integers(1, 15))),
                StatusDef(IN_WORK, "In work", system=True), *custom, StatusDef(LOST, "Lost", system=True))
    return Options(statuses=statuses, reset_on_calls=draw(st.booleans()), require_call=draw(st.booleans()),
                   call_lookback_days=draw(st.integers(0, 5)), language="en")


def codes_of(opts: Options) -> list[str | None]:
    return [None, *opts.codes, "DELETED"]


@st.composite
def entity(draw, opts: Options) -> Entity:
    status = draw(st.sampled_from(codes_of(opts)))
    set_on = day(-draw(st.integers(0, 20)))
    last_call = draw(st.none() | st.integers(-25, 0).map(day))
    open_deals = draw(st.integers(0, 1)) if status == IN_WORK else 0
    return Entity(status, set_on, last_call_on=last_call, open_deals=open_deals,
                  status_before_deal=draw(st.sampled_from([None, *opts.custom_chain])) if open_deals else None)


@st.composite
def portal_event(draw, opts: Options):
    when = day(draw(st.integers(0, HORIZON)))
    kind = draw(st.sampled_from(["call", "call", "manual", "deal", "import", "new"]))
    if kind in ("call", "new"):
        return when, kind, {}
    if kind == "import":
        return when, kind, {"status": draw(st.sampled_from(codes_of(opts)))}
    if kind == "manual":
        return when, kind, {"status": draw(st.sampled_from(codes_of(opts)[:-1])),
                            "reason": draw(st.sampled_from([None, "price", "other"]))}
    return when, kind, {"open_deals": draw(st.integers(0, 2)), "outcome": draw(st.sampled_from([None, "won", "lost"]))}


@st.composite
def history(draw):
    opts = draw(options())
    start = draw(entity(opts))
    events = sorted(draw(st.lists(portal_event(opts), max_size=25)), key=lambda ev: ev[0])
    random_runs = draw(st.lists(st.integers(0, HORIZON).map(day), max_size=HORIZON))
    return opts, start, events, random_runs


def _rank(opts: Options, steps) -> int:
    return sum(1 for s in steps if s.cause == "decay")


def _assert_chained(start: Entity, steps) -> None:
    status, last = start.status, None
    for s in steps:
        if s.cause == "revert":  # from the rejected value back to the tracked one
            assert s.to_status == status
        else:
            assert s.from_status == status
            status = s.to_status
        assert last is None or s.on >= last
        last = s.on


@EXAMPLES
@given(history())
def test_decay_does_not_depend_on_when_or_how_often_the_run_happens(h):
    opts, start, events, random_runs = h
    until = day(HORIZON)
    every_day = simulate(opts, start, events, [day(n) for n in range(HORIZON + 1)], until)
    once_at_the_end = simulate(opts, start, events, [], until)
    random_days = simulate(opts, start, events, random_runs, until)
    assert every_day == once_at_the_end == random_days
    _assert_chained(start, every_day[1])
    # ... nor on whether a day's events are processed before or after that day's run.
    e, steps = start, []
    for n in range(HORIZON + 1):
        for when, kind, data in events:
            if when == day(n):
                e, more = apply_event(opts, e, when, kind, data)
                steps += more
        e, more = decay_through(opts, e, day(n))
        steps += more
    assert (e, steps) == every_day


@EXAMPLES
@given(st.data())
def test_a_call_never_brings_a_due_date_closer(data):
    opts = data.draw(options())
    e = data.draw(entity(opts))
    call_day = day(data.draw(st.integers(-5, HORIZON)))
    later = day(data.draw(st.integers(0, HORIZON * 3)))
    without, steps_without = decay_through(opts, e, call_day)
    with_call, steps_with = record_call(opts, e, call_day)
    assert steps_with == steps_without  # the call is too late for anything due that day
    assert with_call.status == without.status
    due_without, due_with = due_date(opts, without), due_date(opts, with_call)
    assert (due_without is None) == (due_with is None)
    if due_with is not None:
        assert due_with >= due_without
    # ... and it never makes the client fall further by any later day.
    assert _rank(opts, decay_through(opts, with_call, later)[1]) <= _rank(opts, decay_through(opts, without, later)[1])


@EXAMPLES
@given(st.data())
def test_a_revert_restores_exactly_the_previous_status(data):
    opts = data.draw(options())
    e = data.draw(entity(opts))
    when = day(data.draw(st.integers(0, HORIZON)))
    wanted = data.draw(st.sampled_from(codes_of(opts)[:-1] + ["PLATINUM"]))
    reason = data.draw(st.sampled_from([None, "price", "other"]))
    before, _ = decay_through(opts, e, when)
    verdict = check_manual_change(opts, before, wanted, when, before.last_call_on, reason)
    after, steps = simulate(opts, e, [(when, "manual", {"status": wanted, "reason": reason})], [], when)
    event(f"verdict: {verdict.problem or 'allowed'}")
    if verdict.allowed:
        assert after.status == (wanted if wanted != "EMPTY" else None)
        return
    assert verdict.problem in ("no_call", "reason_required", "unknown_status")
    assert after == before  # nothing about the entity moved
    assert revert_target(after) == before.status
    assert steps[-1].cause == "revert" and steps[-1].to_status == before.status
    assert steps[-1].from_status == wanted


@EXAMPLES
@given(history())
def test_lost_is_terminal_decay_never_leaves_lost(h):
    opts, start, events, random_runs = h
    _, steps = simulate(opts, start, events, random_runs, day(HORIZON))
    assert all(s.from_status != LOST for s in steps if s.cause == "decay")
    lost = Entity(LOST, start.status_set_on, last_call_on=start.last_call_on)
    calls_only = [ev for ev in events if ev[1] == "call"]
    final, steps = simulate(opts, lost, calls_only, random_runs, day(HORIZON * 10))
    assert final.status == LOST and steps == []


@EXAMPLES
@given(history())
def test_in_work_never_decays(h):
    opts, start, events, random_runs = h
    _, steps = simulate(opts, start, events, random_runs, day(HORIZON))
    assert all(s.from_status != IN_WORK for s in steps if s.cause == "decay")
    held = Entity(IN_WORK, start.status_set_on, last_call_on=start.last_call_on, open_deals=1)
    calls_only = [ev for ev in events if ev[1] == "call"]
    final, steps = simulate(opts, held, calls_only, random_runs, day(HORIZON * 10))
    assert final.status == IN_WORK and steps == []



def _periods(opts: Options, e: Entity, until: dt.date):
    """(status, due, warn) of each status the entity passes through up to `until` (no events)."""
    while True:
        due = due_date(opts, e)
        yield e.status, due, warn_date(opts, e)
        if due is None or due > until:
            return
        e, _ = decay_through(opts, e, due)


@EXAMPLES
@given(st.data())
def test_each_warning_is_given_once_whatever_the_run_schedule(data):
    """Passing the previous run's day, a status period is warned at most once, only inside its
    window [warn, due), and exactly once when a run falls in the window after an earlier run
    (or on the warning day itself) — daily runs or runs on random days."""
    opts = data.draw(options())
    start = Entity(data.draw(st.sampled_from([NEW, *opts.custom_chain, "DELETED"])),
                   day(-data.draw(st.integers(0, 5))))
    # Dense schedules: each day has a run or not, so warning windows are actually hit.
    pattern = data.draw(st.lists(st.integers(0, 3).map(bool), min_size=HORIZON + 1, max_size=HORIZON + 1))
    runs = [day(n) for n, ran in enumerate(pattern) if ran] or [day(0)]
    warned: list[tuple] = []
    e, last_run = start, None
    for run in runs:
        e, _ = decay_through(opts, e, run)
        if should_warn(opts, e, run, last_run):
            warned.append((e.status, due_date(opts, e), run))
        last_run = run
    periods = {(status, due): warn for status, due, warn in _periods(opts, start, runs[-1])}
    told = [(status, due) for status, due, _ in warned]
    assert len(told) == len(set(told))
    for status, due, run in warned:
        assert periods[(status, due)] <= run < due
    for (status, due), warn in periods.items():
        if warn is None:
            continue
        in_window = [r for r in runs if warn <= r < due]
        if in_window and runs[0] <= warn:
            assert (status, due) in told
