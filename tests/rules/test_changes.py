"""Manual changes (echo vs manual, the call rule, required reasons, revert) and the deal rules."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from addon.options import IN_WORK, LOST, NEW, Options
from addon.rules import (Entity, Step, Verdict, apply_deals, apply_manual_change, check_manual_change,
                         classify_change, decay_through, due_date, handle_manual_change,
                         reject_manual_change, revert_step, revert_target, set_status, simulate)

FRIDAY = dt.date(2026, 3, 6)
MONDAY = dt.date(2026, 3, 9)
OPTS = Options()
STRICT = replace(OPTS, require_call=True)


def d(n: int) -> dt.date:
    return dt.date(2026, 3, 2) + dt.timedelta(days=n)


# --- classify_change ---------------------------------------------------------------------------

def test_classify_same_echo_manual():
    assert classify_change("HOT", "HOT", None) == "same"
    assert classify_change("WARM", "HOT", "HOT") == "echo"  # our own write coming back late
    assert classify_change("HOT", "WARM", "HOT") == "manual"
    assert classify_change("HOT", "WARM", None) == "manual"
    assert classify_change(None, "HOT", None) == "manual"
    assert classify_change("HOT", None, None) == "manual"  # the field was cleared
    assert classify_change(None, "", None) == "same"
    assert classify_change("EMPTY", None, None) == "same"


# --- the call rule -----------------------------------------------------------------------------

def test_without_the_option_any_known_status_is_allowed():
    assert check_manual_change(OPTS, Entity(NEW, d(0)), "HOT", d(5), None) == Verdict(True)


def test_no_call_in_the_window_is_refused():
    v = check_manual_change(STRICT, Entity(NEW, d(0)), "HOT", d(5), None)
    assert v == Verdict(False, "no_call")
    v = check_manual_change(STRICT, Entity(NEW, d(0)), "HOT", d(10), d(6))  # 4 days ago, look-back 3
    assert v == Verdict(False, "no_call")


def test_seed_003_a_friday_call_counts_on_monday_with_three_days():
    assert check_manual_change(STRICT, Entity(NEW, FRIDAY), "HOT", MONDAY, FRIDAY).allowed
    # ... and not with two.
    v = check_manual_change(replace(STRICT, call_lookback_days=2), Entity(NEW, FRIDAY), "HOT", MONDAY, FRIDAY)
    assert v.problem == "no_call"


def test_the_window_is_inclusive_on_both_ends_and_a_later_call_does_not_count():
    e = Entity("WARM", d(0))
    assert check_manual_change(STRICT, e, "HOT", d(10), d(10)).allowed
    assert check_manual_change(STRICT, e, "HOT", d(10), d(7)).allowed
    assert not check_manual_change(STRICT, e, "HOT", d(10), d(11)).allowed
    zero = replace(STRICT, call_lookback_days=0)
    assert check_manual_change(zero, e, "HOT", d(10), d(10)).allowed
    assert not check_manual_change(zero, e, "HOT", d(10), d(9)).allowed


def test_reselecting_the_current_status_and_first_classification_are_always_allowed():
    assert check_manual_change(STRICT, Entity("HOT", d(0)), "HOT", d(5), None) == Verdict(True)
    assert check_manual_change(STRICT, Entity(None, None), "HOT", d(5), None) == Verdict(True)


def test_unknown_status_is_refused():
    assert check_manual_change(OPTS, Entity(NEW, d(0)), "PLATINUM", d(1), d(1)) == Verdict(False, "unknown_status")


def test_a_status_with_reasons_needs_one_of_them():
    opts = replace(STRICT, statuses=tuple(
        replace(s, reasons=("дорого", "ушёл к конкуренту")) if s.code == LOST else s for s in OPTS.statuses))
    e = Entity("COLD", d(0))
    assert check_manual_change(opts, e, LOST, d(5), d(5)) == Verdict(False, "reason_required")
    assert check_manual_change(opts, e, LOST, d(5), d(5), "другое") == Verdict(False, "reason_required")
    assert check_manual_change(opts, e, LOST, d(5), d(5), "дорого") == Verdict(True)
    # the call rule is checked first
    assert check_manual_change(opts, e, LOST, d(5), None, "дорого") == Verdict(False, "no_call")
    # statuses without reasons need none
    assert check_manual_change(opts, e, "HOT", d(5), d(5)) == Verdict(True)


# --- applying and reverting --------------------------------------------------------------------

def test_manual_change_sets_a_new_base_and_keeps_the_previous_status():
    e, steps = apply_manual_change(OPTS, Entity(NEW, d(0)), "HOT", d(5))
    assert steps == [Step(NEW, "HOT", d(5), "manager")]
    assert e.status == "HOT" and e.status_set_on == d(5) and e.previous_status == NEW
    assert due_date(OPTS, e) == d(35)


def test_manual_change_decays_through_its_day_first():
    e, steps = apply_manual_change(OPTS, Entity(NEW, d(0)), "HOT", d(12))
    assert steps == [Step(NEW, LOST, d(10), "decay"), Step(LOST, "HOT", d(12), "manager")]
    assert e.previous_status == LOST


def test_reselecting_changes_nothing():
    e = Entity("HOT", d(0))
    assert apply_manual_change(OPTS, e, "HOT", d(5)) == (e, [])


def test_clearing_the_field_stops_tracking():
    e, steps = apply_manual_change(OPTS, Entity("HOT", d(0)), None, d(5))
    assert e.status is None and steps == [Step("HOT", None, d(5), "manager")]
    assert decay_through(OPTS, e, d(500)) == (e, [])


def test_a_refused_change_is_reverted_to_exactly_the_tracked_status():
    e = Entity("WARM", d(0), previous_status="HOT")
    assert revert_target(e) == "WARM"
    assert revert_step(e, "HOT", d(3)) == Step("HOT", "WARM", d(3), "revert")
    final, steps = simulate(STRICT, e, [(d(3), "manual", {"status": "HOT"})], [], d(3))
    assert final == e and steps == [Step("HOT", "WARM", d(3), "revert")]


def test_an_allowed_change_after_a_call_is_recorded():
    events = [(FRIDAY, "call", {}), (MONDAY, "manual", {"status": "HOT"})]
    e, steps = simulate(STRICT, Entity("COLD", d(0)), events, [], MONDAY)
    assert e.status == "HOT" and e.status_set_on == MONDAY
    assert steps == [Step("COLD", "HOT", MONDAY, "manager")]


def test_import_sets_without_checks():
    e, steps = set_status(STRICT, Entity(NEW, d(0)), "COLD", d(2), "import")
    assert e.status == "COLD" and steps == [Step(NEW, "COLD", d(2), "import")]
    with pytest.raises(ValueError):
        set_status(OPTS, e, "HOT", d(3), "whim")


# --- deals -------------------------------------------------------------------------------------

def test_an_open_deal_holds_in_work_and_in_work_never_decays():
    e, steps = apply_deals(OPTS, Entity("WARM", d(0)), 1, None, d(5))
    assert e.status == IN_WORK and e.status_before_deal == "WARM" and e.open_deals == 1
    assert steps == [Step("WARM", IN_WORK, d(5), "deal")]
    assert decay_through(OPTS, e, d(5000)) == (e, [])


def test_last_open_deal_won_makes_the_client_hot():
    e, _ = apply_deals(OPTS, Entity("COLD", d(0)), 2, None, d(1))
    e, steps = apply_deals(OPTS, e, 1, "won", d(3))
    assert e.status == IN_WORK and steps == []  # another deal is still open
    e, steps = apply_deals(OPTS, e, 0, "lost", d(4))
    # a deal was won meanwhile, so the status to return to is HOT, not COLD
    assert e.status == "HOT" and steps == [Step(IN_WORK, "HOT", d(4), "deal")]
    e2, _ = apply_deals(OPTS, Entity("COLD", d(0)), 1, None, d(1))
    e2, steps = apply_deals(OPTS, e2, 0, "won", d(8))
    assert e2.status == "HOT" and e2.status_set_on == d(8) and e2.status_before_deal is None
    assert due_date(OPTS, e2) == d(38)


def test_last_open_deal_lost_returns_to_the_status_before():
    e, _ = apply_deals(OPTS, Entity("WARM", d(0)), 1, None, d(5))
    e, steps = apply_deals(OPTS, e, 0, "lost", d(20))
    assert e.status == "WARM" and e.status_set_on == d(20) and e.open_deals == 0
    assert steps == [Step(IN_WORK, "WARM", d(20), "deal")]


def test_deal_decays_through_its_day_first():
    e, steps = apply_deals(OPTS, Entity(NEW, d(0)), 1, None, d(10))
    assert steps == [Step(NEW, LOST, d(10), "decay"), Step(LOST, IN_WORK, d(10), "deal")]
    e, _ = apply_deals(OPTS, e, 0, "lost", d(11))
    assert e.status == LOST


def test_in_work_without_a_remembered_status_returns_to_the_top_of_the_chain():
    e, _ = apply_deals(OPTS, Entity(IN_WORK, d(0), open_deals=1), 0, "lost", d(3))
    assert e.status == "HOT"


def test_won_while_already_hot_restarts_the_timer_without_a_step():
    e, steps = apply_deals(OPTS, Entity("HOT", d(0), open_deals=1), 0, "won", d(20))
    assert e.status == "HOT" and e.status_set_on == d(20) and steps == []


def test_deals_leave_empty_entities_alone():
    e, steps = apply_deals(OPTS, Entity(None, None), 2, None, d(1))
    assert e.status is None and e.open_deals == 2 and steps == []


def test_unknown_outcome_is_an_error():
    with pytest.raises(ValueError):
        apply_deals(OPTS, Entity("HOT", d(0)), 0, "maybe", d(1))


def test_manual_in_work_remembers_where_it_came_from():
    e, _ = apply_manual_change(OPTS, Entity("COLD", d(0)), IN_WORK, d(1))
    assert e.status_before_deal == "COLD"
    e, _ = apply_manual_change(OPTS, e, "WARM", d(2))
    assert e.status_before_deal is None


def test_simulated_creation_gives_new_when_the_option_is_on():
    e, steps = simulate(OPTS, Entity(None, None), [(d(1), "new", {})], [], d(12))
    assert steps == [Step(None, NEW, d(1), "new"), Step(NEW, LOST, d(11), "decay")]
    e, steps = simulate(replace(OPTS, new_for_new_entities=False), Entity(None, None), [(d(1), "new", {})], [], d(12))
    assert e.status is None and steps == []
    # an entity created with a status already chosen keeps it
    e, steps = simulate(OPTS, Entity("HOT", d(1)), [(d(1), "new", {})], [], d(2))
    assert e.status == "HOT" and steps == []


def test_unknown_event_kinds_are_errors():
    with pytest.raises(ValueError):
        simulate(OPTS, Entity(NEW, d(0)), [(d(1), "sms", {})], [], d(2))


def test_a_change_is_judged_against_the_status_of_its_day():
    # HOT decays to WARM on d(30); the manager picks WARM that day: nothing to refuse or record.
    e = Entity("HOT", d(0))
    assert check_manual_change(STRICT, e, "WARM", d(30), None) == Verdict(True)
    final, steps, verdict = handle_manual_change(STRICT, e, "WARM", d(30), None)
    assert verdict.allowed and final.status == "WARM" and steps == [Step("HOT", "WARM", d(30), "decay")]
    # ... and a refused change on that day is reverted to WARM, not to the HOT of yesterday.
    final, steps, verdict = handle_manual_change(STRICT, e, "HOT", d(30), None)
    assert verdict == Verdict(False, "no_call")
    assert steps == [Step("HOT", "WARM", d(30), "decay"), Step("HOT", "WARM", d(30), "revert")]
    assert revert_target(final) == "WARM"


def test_reject_changes_nothing_but_the_day():
    e = Entity("COLD", d(0), last_call_on=d(1), previous_status="WARM")
    assert reject_manual_change(OPTS, e, "HOT", d(5)) == (e, [Step("HOT", "COLD", d(5), "revert")])


def test_handle_records_an_allowed_change():
    final, steps, verdict = handle_manual_change(STRICT, Entity("COLD", d(0)), "HOT", d(5), d(4))
    assert verdict == Verdict(True) and final.status == "HOT" and final.previous_status == "COLD"
    assert steps == [Step("COLD", "HOT", d(5), "manager")]
