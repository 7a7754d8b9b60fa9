"""The pipeline robots' rules as pure functions: no I/O, no clock — time and portal data are passed in."""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

# --- distribution (robot 1; also the SLA's reassignment) ---------------------------------------------

MODES = ("round_robin", "least_loaded", "ranking")


@dataclass(frozen=True)
class PoolState:
    """A pool's memory between picks: who got the last item (the round-robin cursor) and, for the
    weighted mode, each manager's credit (smooth weighted round robin)."""

    last_user: int | None = None
    credits: Mapping[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"last_user": self.last_user, "credits": {str(k): v for k, v in self.credits.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PoolState":
        data = data or {}
        last = data.get("last_user")
        return cls(last_user=int(last) if last is not None else None,
                   credits={int(k): float(v) for k, v in (data.get("credits") or {}).items()})


def eligible_managers(pool: Sequence[int], active: Iterable[int], absent: Iterable[int] = (),
                      exclude: Iterable[int] = ()) -> list[int]:
    """The pool in its order without deactivated, absent and excluded users (and without repeats)."""
    active_set, absent_set, excluded = set(active), set(absent), set(exclude)
    seen: set[int] = set()
    result = []
    for user in pool:
        if user in seen:
            continue
        seen.add(user)
        if user in active_set and user not in absent_set and user not in excluded:
            result.append(user)
    return result


def _after_cursor(pool: Sequence[int], candidates: Sequence[int], last_user: int | None) -> list[int]:
    """Candidates in pool order, starting right after the last chosen user's place in the pool.

    The cursor is a place in the pool, not a debt: users skipped while absent are simply passed over,
    so on return they take their normal turn and get no backlog."""
    order = list(dict.fromkeys(pool))
    if last_user is None or last_user not in order:
        start = 0
    else:
        start = order.index(last_user) + 1
    rotated = order[start:] + order[:start]
    wanted = set(candidates)
    return [u for u in rotated if u in wanted]


def distribute(mode: str, pool: Sequence[int], active: Iterable[int], state: PoolState,
               absent: Iterable[int] = (), exclude: Iterable[int] = (),
               loads: Mapping[int, int] | None = None,
               weights: Mapping[int, float] | None = None) -> tuple[int | None, PoolState]:
    """Choose the manager for the next item; None when nobody in the pool can take it.

    - round_robin: the next eligible manager after the cursor;
    - least_loaded: the fewest open items (`loads`), ties broken by the rotation;
    - ranking: smooth weighted round robin over `weights` (1.0 by default; the monthly ranking's
      weakest get less). Only managers who can take items earn credit, so an absence builds no debt.
    """
    if mode not in MODES:
        raise ValueError(f"unknown distribution mode {mode!r}")
    candidates = eligible_managers(pool, active, absent, exclude)
    if not candidates:
        return None, state
    rotation = _after_cursor(pool, candidates, state.last_user)
    if mode == "round_robin":
        chosen = rotation[0]
        return chosen, replace(state, last_user=chosen)
    if mode == "least_loaded":
        loads = loads or {}
        chosen = min(rotation, key=lambda u: loads.get(u, 0))  # min keeps the first of equals
        return chosen, replace(state, last_user=chosen)
    weights = weights or {}
    credits = dict(state.credits)
    total = 0.0
    for user in candidates:
        w = max(float(weights.get(user, 1.0)), 0.0)
        credits[user] = credits.get(user, 0.0) + w
        total += w
    best = max(credits[u] for u in rotation)
    chosen = next(u for u in rotation if credits[u] == best)
    credits[chosen] -= total
    # Credits of people no longer in the pool are dropped so a long-gone manager leaves no trace.
    members = set(pool)
    credits = {u: round(c, 9) for u, c in credits.items() if u in members}
    return chosen, PoolState(last_user=chosen, credits=credits)


# --- monthly ranking (robot 8) ---------------------------------------------------------------------

@dataclass(frozen=True)
class RankRow:
    user_id: int
    new_items: int
    converted: int

    @property
    def conversion(self) -> float:
        return self.converted / self.new_items if self.new_items else 0.0


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """[first instant, first instant of the next month) of "YYYY-MM", naive (the caller's zone)."""
    year, mon = (int(x) for x in month.split("-"))
    start = dt.datetime(year, mon, 1)
    days = calendar.monthrange(year, mon)[1]
    return start, start + dt.timedelta(days=days)


def previous_month(month: str) -> str:
    start, _ = month_bounds(month)
    prev = start - dt.timedelta(days=1)
    return f"{prev.year:04d}-{prev.month:02d}"


def monthly_ranking(assigned: Iterable[tuple[int, str]], reached: Iterable[str]) -> list[RankRow]:
    """Each manager's conversion of the month's new items (user, document) into the ranking stage
    (`reached` = documents that entered it), best first; ties by more items, then by user ID."""
    reached_set = set(reached)
    items: dict[int, set[str]] = {}
    for user, document in assigned:
        items.setdefault(user, set()).add(document)
    rows = [RankRow(user, len(docs), len(docs & reached_set)) for user, docs in items.items()]
    rows.sort(key=lambda r: (-r.conversion, -r.new_items, r.user_id))
    return rows


def ranking_weights(rows: Sequence[RankRow], weak_share: float = 0.5, weakest: int = 3) -> dict[int, float]:
    """Next month's distribution weights: the weakest `weakest` managers get `weak_share`, the rest 1.

    At least one manager keeps the full share, so a small team is never cut entirely."""
    cut = min(weakest, max(len(rows) - 1, 0))
    weights = {r.user_id: 1.0 for r in rows}
    for row in rows[len(rows) - cut:] if cut else ():
        weights[row.user_id] = float(weak_share)
    return weights


# --- take in work within N minutes (robot 2) ------------------------------------------------------

@dataclass(frozen=True)
class SlaCheck:
    """What the portal says about an item when its take-in-work deadline comes."""

    exists: bool
    responsible: int | None
    stage: str | None
    closed: bool = False
    activity_times: tuple[dt.datetime, ...] = ()  # created activities (calls, tasks, e-mails)
    comment_times: tuple[dt.datetime, ...] = ()  # timeline comments
    edited_by_responsible_at: dt.datetime | None = None  # the responsible's own last edit of the item


def sla_verdict(check: SlaCheck, assigned_to: int, assigned_at: dt.datetime, stage_at_assign: str | None) -> str:
    """'met' (the responsible touched the item: a stage change, an activity, a comment or their own
    edit), 'gone' (the reason to wait went away: deleted,
    closed, or someone else made responsible) or 'breach'."""
    if not check.exists or check.closed:
        return "gone"
    if check.responsible != assigned_to:
        return "gone"
    if stage_at_assign is not None and check.stage != stage_at_assign:
        return "met"
    if any(t >= assigned_at for t in check.activity_times) or any(t >= assigned_at for t in check.comment_times):
        return "met"
    if check.edited_by_responsible_at is not None and check.edited_by_responsible_at >= assigned_at:
        return "met"
    return "breach"


def sla_next_step(reassigned: int, max_reassign: int) -> str:
    """After a breach: 'reassign' while the ladder has steps left, else 'give_up'."""
    return "reassign" if reassigned < max_reassign else "give_up"


# --- call-attempt cadence (robot 6) ---------------------------------------------------------------

WEEKDAY_SLOTS = ((13, 15), (19, 21))  # people answer at lunch and after work
WEEKEND_SLOTS = ((11, 13), (19, 21))  # weekends: not too early


@dataclass(frozen=True)
class CallSlot:
    attempt: int
    start: dt.datetime
    end: dt.datetime


def _cadence_days(start_day: dt.date) -> list[dt.date]:
    """The days of the attempts after a first unanswered call on `start_day` (day 0):
    week 1 every other day (days 2, 4, 6); weeks 2–4 twice a week, one of them at a weekend;
    weeks 5–8 once a week."""
    days = [start_day + dt.timedelta(days=d) for d in (2, 4, 6)]
    for week in range(1, 4):  # weeks 2..4: the window of days [7w, 7w+7)
        window = [start_day + dt.timedelta(days=7 * week + i) for i in range(7)]
        weekend = next(d for d in window if d.weekday() >= 5)
        weekdays = [d for d in window if d.weekday() < 5 and abs((d - weekend).days) >= 2]
        weekday = weekdays[len(weekdays) // 2] if weekdays else next(d for d in window if d.weekday() < 5)
        days.extend(sorted((weekday, weekend)))
    for week in range(4, 8):  # weeks 5..8: one call, on the window's middle day
        days.append(start_day + dt.timedelta(days=7 * week + 3))
    return days


def call_cadence(start: dt.datetime) -> list[CallSlot]:
    """The call attempts for a client who did not answer at `start` (aware, portal time):
    13 tasks in 8 weeks, slots alternating between lunch and evening to try different times."""
    tz = start.tzinfo
    slots = []
    for n, day in enumerate(_cadence_days(start.date()), start=1):
        options = WEEKEND_SLOTS if day.weekday() >= 5 else WEEKDAY_SLOTS
        lo, hi = options[(n - 1) % 2]
        slots.append(CallSlot(n, dt.datetime.combine(day, dt.time(lo), tz), dt.datetime.combine(day, dt.time(hi), tz)))
    return slots


# --- reminder N working days before a date (robot 7) ----------------------------------------------

def working_days_before(day: dt.date, n: int) -> dt.date:
    """The working day (Mon–Fri) `n` working days before `day`; `n` = 0 is the day itself."""
    current = day
    left = n
    while left > 0:
        current -= dt.timedelta(days=1)
        if current.weekday() < 5:
            left -= 1
    return current


def reminder_moment(appointment: dt.datetime, working_days: int, at: dt.time = dt.time(9)) -> dt.datetime:
    """When the confirmation task is due to be set: `at` o'clock, N working days before (portal time)."""
    day = working_days_before(appointment.date(), working_days)
    return dt.datetime.combine(day, at, appointment.tzinfo)


def reminder_plan(appointment: dt.datetime | None, working_days: int, now: dt.datetime) -> str:
    """'none' (no date, or the date has passed), 'now' (the reminder moment has come) or 'wait'."""
    if appointment is None or appointment <= now:
        return "none"
    return "now" if reminder_moment(appointment, working_days) <= now else "wait"


# --- stuck in a stage (robot 9) -------------------------------------------------------------------

def is_stuck(entered_at: dt.datetime, stage_then: str | None, stage_now: str | None, now: dt.datetime,
             hours: float) -> bool:
    return stage_now == stage_then and now - entered_at >= dt.timedelta(hours=hours)


# --- required fields and close reasons (robots 4, 5) ----------------------------------------------

def is_empty(value: Any) -> bool:
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (list, tuple)):
        return all(is_empty(v.get("VALUE") if isinstance(v, dict) else v) for v in value)
    if isinstance(value, dict):
        return not value
    return False


def missing_fields(item: Mapping[str, Any], fields: Iterable[str]) -> list[str]:
    """The listed fields that are empty on the item (field codes are matched case-insensitively)."""
    upper = {str(k).upper(): v for k, v in item.items()}
    return [f for f in fields if f and is_empty(upper.get(f.strip().upper()))]


def close_reason(item: Mapping[str, Any], reason_field: str, labels: Mapping[str, str] | None = None) -> str | None:
    """The item's close reason (an enumeration item's label when `labels` maps its ID), or None."""
    value = {str(k).upper(): v for k, v in item.items()}.get(reason_field.strip().upper())
    if isinstance(value, (list, tuple)):
        value = next((v for v in value if not is_empty(v)), None)
    if is_empty(value):
        return None
    text = str(value).strip()
    return (labels or {}).get(text, text)


# --- one client per phone (robot 3) ---------------------------------------------------------------

def repeat_request_branch(known_responsible: int | None, active_users: Iterable[int]) -> str:
    """For a request from a known phone: 'owner' (a task to the known client's active responsible,
    the item stays where it is) or 'return' (back to the first stage, for others to take)."""
    if known_responsible and known_responsible in set(active_users):
        return "owner"
    return "return"
