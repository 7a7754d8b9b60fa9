"""The status ladder as pure functions (DESIGN §1, seed 003): due and warning dates, decay with
exact catch-up, calls, manual changes with the call and reason rules, deals, new entities.

No I/O and no clock: every day is a parameter, a `datetime.date` in the portal's time zone.
Every function returns a new `Entity` and the list of `Step`s that happened, oldest first.

Deleted custom statuses: an entity whose code no longer exists in the options keeps its code
(so history and the portal field stay truthful) but is timed and decays exactly like the TOP of
the custom chain (`opts.won_status`): its days, its warning days and its next status. It is the
most generous reading — a client is never pushed further down because the admin edited the list.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, replace

from addon.options import EMPTY, IN_WORK, LOST, NEW, Options

CAUSES = ("manager", "decay", "deal", "import", "revert", "new", "index", "undo")
DEAL_OUTCOMES = (None, "won", "lost")


@dataclass(frozen=True)
class Entity:
    """What the rules need to know of a tracked contact or company."""

    status: str | None  # None = EMPTY: ignored by every rule
    status_set_on: dt.date | None
    last_call_on: dt.date | None = None
    previous_status: str | None = None
    status_before_deal: str | None = None
    open_deals: int = 0


ENTITY_FIELDS = ("status", "status_set_on", "last_call_on", "previous_status", "status_before_deal",
                 "open_deals")


def reason_code(reason: str) -> str:
    """A loss reason's list-item XML_ID: stable for its text whatever its case and spacing."""
    return "R_" + hashlib.sha1(reason.strip().lower().encode()).hexdigest()[:12].upper()


def entity_of(row: object) -> Entity:
    """The rules' view of anything with the service table's column names (a TrackedEntity row)."""
    values = {name: getattr(row, name, None) for name in ENTITY_FIELDS}
    values["status"] = normalize_status(values["status"])
    values["open_deals"] = int(values["open_deals"] or 0)
    return Entity(**values)


def row_values(opts: Options, e: Entity) -> dict[str, object]:
    """What to store back on the service-table row: the entity's fields plus its due and warning
    dates (the columns the daily run's index range scans read)."""
    values: dict[str, object] = {name: getattr(e, name) for name in ENTITY_FIELDS}
    values["due_on"], values["warn_on"] = due_date(opts, e), warn_date(opts, e)
    return values


@dataclass(frozen=True)
class Step:
    """One transition of an entity's status, dated the day it took effect."""

    from_status: str | None
    to_status: str | None
    on: dt.date
    cause: str  # one of CAUSES


@dataclass(frozen=True)
class Verdict:
    """Whether a manager's change of status stands; `problem` names why not."""

    allowed: bool
    problem: str | None = None  # "no_call" | "reason_required" | "unknown_status"


def normalize_status(code: str | None) -> str | None:
    """The portal and imports may say EMPTY or '' for the empty field; the rules say None."""
    if code is None:
        return None
    code = str(code).strip()
    return None if code in ("", EMPTY) else code


def rule_code(opts: Options, code: str | None) -> str | None:
    """The code whose settings time `code`: itself, or the top custom status if it was deleted."""
    code = normalize_status(code)
    if code is None or opts.status(code) is not None:
        return code
    return opts.won_status


def next_status(opts: Options, code: str | None) -> str | None:
    """What `code` decays to (None: it does not decay), deleted codes included."""
    rc = rule_code(opts, code)
    return opts.next_status(rc) if rc is not None else None


def days_for(opts: Options, code: str | None) -> int | None:
    rc = rule_code(opts, code)
    if rc is None or next_status(opts, code) is None:
        return None
    s = opts.status(rc)
    return s.days if s is not None else None


# --- dates -------------------------------------------------------------------------------------

def base_date(opts: Options, e: Entity) -> dt.date | None:
    """The day the timer counts from: the day the status was set, or with "reset on calls" the
    later of that and the last completed call."""
    if normalize_status(e.status) is None:
        return None
    base = e.status_set_on
    if opts.reset_on_calls and e.last_call_on is not None:
        base = e.last_call_on if base is None else max(base, e.last_call_on)
    return base


def due_date(opts: Options, e: Entity) -> dt.date | None:
    """The day the next decay step takes effect (at the start of that day); None if it never will."""
    base = base_date(opts, e)
    days = days_for(opts, e.status)
    if base is None or days is None:
        return None
    return base + dt.timedelta(days=days)


def warn_date(opts: Options, e: Entity) -> dt.date | None:
    """The day the manager is warned: `warn_days` before the due date, never before the base.
    None when the status does not decay or its warning days are 0 (a warning on the due date
    itself would arrive with the step it warns about)."""
    due = due_date(opts, e)
    if due is None:
        return None
    warn_days = opts.warn_days_for(rule_code(opts, e.status))
    if warn_days <= 0:
        return None
    return max(due - dt.timedelta(days=warn_days), base_date(opts, e))


def dates(opts: Options, e: Entity) -> tuple[dt.date | None, dt.date | None]:
    """(due_date, warn_date) — what the service table stores for the index range scans."""
    return due_date(opts, e), warn_date(opts, e)


def should_warn(opts: Options, e: Entity, day: dt.date, last_run_on: dt.date | None = None) -> bool:
    """Is the manager warned in the run of `day`? Once: on the warning day; a run that follows
    missed runs (`last_run_on`, the previous run's day) warns if the warning day fell in between
    and the step is still ahead."""
    due, warn = dates(opts, e)
    if warn is None or due is None or day >= due:
        return False
    if last_run_on is None or last_run_on >= day:
        return warn == day
    return last_run_on < warn <= day


# --- decay -------------------------------------------------------------------------------------

def decay_through(opts: Options, e: Entity, day: dt.date) -> tuple[Entity, list[Step]]:
    """Every decay step whose due date is on or before `day`, one at a time. The new status counts
    from the due date (not from `day`), so catching up after missed runs is exact."""
    steps: list[Step] = []
    while True:
        due = due_date(opts, e)
        if due is None or due > day:
            return e, steps
        to = next_status(opts, e.status)
        steps.append(Step(e.status, to, due, "decay"))
        e = replace(e, status=to, status_set_on=due, previous_status=e.status)


def record_call(opts: Options, e: Entity, call_day: dt.date) -> tuple[Entity, list[Step]]:
    """A completed call on `call_day`. Decay through that day first (a call on the due date is too
    late for that step), then move the last call forward (never backwards: events arrive late)."""
    e, steps = decay_through(opts, e, call_day)
    if e.last_call_on is None or call_day > e.last_call_on:
        e = replace(e, last_call_on=call_day)
    return e, steps


# --- manual changes ----------------------------------------------------------------------------

def classify_change(current_status: str | None, portal_status: str | None,
                    written_status: str | None) -> str:
    """What a status value arriving in an update event is:
    "same"   — what we already track (the manager re-selected it, or nothing changed);
    "echo"   — the value Nezabyt itself last wrote, coming back in the event of our own write;
    "manual" — a manager's change, to be checked and recorded or reverted.
    The caller clears `written_status` once a manual change is recorded, so a manager returning
    to the value we once wrote is not mistaken for an echo."""
    current, portal = normalize_status(current_status), normalize_status(portal_status)
    if portal == current:
        return "same"
    if written_status is not None and portal == normalize_status(written_status):
        return "echo"
    return "manual"


def check_manual_change(opts: Options, e: Entity, new_status: str | None, changed_on: dt.date,
                        last_call_on: dt.date | None, reason: str | None = None) -> Verdict:
    """Does a manager's change to `new_status` on `changed_on` stand?

    - a code the ladder does not know → "unknown_status";
    - "no change without a call" on and no completed call in [changed_on - lookback, changed_on]
      (inclusive: with 3 days a Friday call still counts on Monday) → "no_call";
    - the new status lists reasons and `reason` is not one of them → "reason_required".
    Re-selecting the current status, and classifying an untracked (EMPTY) entity for the first
    time, are always allowed. `last_call_on` is the latest completed call on or before the change.
    The entity is judged as of `changed_on` (decayed through it first).
    """
    # Judge against the status the entity has on that day, not a step behind.
    e, _ = decay_through(opts, e, changed_on)
    new = normalize_status(new_status)
    current = normalize_status(e.status)
    if new == current:
        return Verdict(True)
    if new is not None and opts.status(new) is None:
        return Verdict(False, "unknown_status")
    if current is None:
        # Putting a client on the ladder (by hand, from the list) is how tracking starts.
        return _reason_verdict(opts, new, reason)
    if opts.require_call:
        earliest = changed_on - dt.timedelta(days=opts.call_lookback_days)
        if last_call_on is None or not earliest <= last_call_on <= changed_on:
            return Verdict(False, "no_call")
    return _reason_verdict(opts, new, reason)


def _reason_verdict(opts: Options, new: str | None, reason: str | None) -> Verdict:
    s = opts.status(new) if new is not None else None
    if s is not None and s.reasons and (reason or "").strip() not in s.reasons:
        return Verdict(False, "reason_required")
    return Verdict(True)


def set_status(opts: Options, e: Entity, new_status: str | None, on: dt.date,
               cause: str) -> tuple[Entity, list[Step]]:
    """Bring the entity up to date through `on`, then set `new_status` dated `on` (a new base).
    The status it leaves is kept in `previous_status`. Setting the current status changes nothing."""
    if cause not in CAUSES:
        raise ValueError(f"unknown cause {cause!r}")
    e, steps = decay_through(opts, e, on)
    new = normalize_status(new_status)
    if new == normalize_status(e.status):
        return e, steps
    steps.append(Step(e.status, new, on, cause))
    # IN_WORK set by hand remembers where it came from, as a deal would; leaving it forgets.
    before = (e.status_before_deal or e.status) if new == IN_WORK else None
    e = replace(e, status=new, status_set_on=on, previous_status=e.status, status_before_deal=before)
    return e, steps


def apply_manual_change(opts: Options, e: Entity, new_status: str | None,
                        changed_on: dt.date) -> tuple[Entity, list[Step]]:
    """Record an allowed manual change: decay through `changed_on` first, then the new status
    counts from `changed_on` (the day of the entity's DATE_MODIFY)."""
    return set_status(opts, e, new_status, changed_on, "manager")


def revert_target(e: Entity) -> str | None:
    """The value to write back over a rejected change: the status we track (never applied the
    change). Pass the entity as brought up to date through the change's day."""
    return normalize_status(e.status)


def revert_step(e: Entity, rejected_status: str | None, on: dt.date) -> Step:
    """The history line of a revert: from the rejected value back to the tracked one."""
    return Step(normalize_status(rejected_status), revert_target(e), on, "revert")


def reject_manual_change(opts: Options, e: Entity, rejected_status: str | None,
                         changed_on: dt.date) -> tuple[Entity, list[Step]]:
    """A refused change: decay through its day; nothing else moves; the last step is the revert
    (its `to_status` is the value to write back to the portal)."""
    e, steps = decay_through(opts, e, changed_on)
    return e, steps + [revert_step(e, rejected_status, changed_on)]


def handle_manual_change(opts: Options, e: Entity, new_status: str | None, changed_on: dt.date,
                         last_call_on: dt.date | None, reason: str | None = None
                         ) -> tuple[Entity, list[Step], Verdict]:
    """Check, then record or reject, a manager's change — the one call the event path needs."""
    verdict = check_manual_change(opts, e, new_status, changed_on, last_call_on, reason)
    if verdict.allowed:
        e, steps = apply_manual_change(opts, e, new_status, changed_on)
    else:
        e, steps = reject_manual_change(opts, e, new_status, changed_on)
    return e, steps, verdict


# --- deals -------------------------------------------------------------------------------------

def apply_deals(opts: Options, e: Entity, open_deals: int, outcome: str | None,
                day: dt.date) -> tuple[Entity, list[Step]]:
    """The entity now has `open_deals` open deals; `outcome` is how the deal that just closed ended
    (None if none closed or it was unlinked).

    - open deals → IN_WORK (the status it had is saved in `status_before_deal`); IN_WORK never decays;
    - the last open deal won → `opts.won_status` (HOT by default), a fresh timer even if already there;
    - the last open deal lost (or gone) → the status before the deal; if that is unknown (IN_WORK
      was set by hand or by an import) → `opts.won_status`, as the client was just in active work;
    - a deal won while others stay open makes the won status the one to return to.
    EMPTY entities only have their deal count kept."""
    if outcome not in DEAL_OUTCOMES:
        raise ValueError(f"unknown deal outcome {outcome!r}")
    open_deals = max(0, int(open_deals))
    e, steps = decay_through(opts, e, day)
    if normalize_status(e.status) is None:
        return replace(e, open_deals=open_deals), steps
    if open_deals > 0:
        if e.status != IN_WORK:
            steps.append(Step(e.status, IN_WORK, day, "deal"))
            e = replace(e, status=IN_WORK, status_set_on=day, previous_status=e.status,
                        status_before_deal=e.status)
        if outcome == "won":
            e = replace(e, status_before_deal=opts.won_status)
        return replace(e, open_deals=open_deals), steps
    # No open deal left.
    if outcome == "won":
        target = opts.won_status
    elif e.status == IN_WORK:
        target = e.status_before_deal or opts.won_status
    else:
        # A manager already moved it out of IN_WORK; a lost or unlinked deal changes nothing.
        return replace(e, open_deals=0), steps
    if target != e.status:
        steps.append(Step(e.status, target, day, "deal"))
        e = replace(e, previous_status=e.status)
    return replace(e, status=target, status_set_on=day, status_before_deal=None, open_deals=0), steps


# --- new entities ------------------------------------------------------------------------------

def new_entity(opts: Options, created_on: dt.date) -> Entity | None:
    """A contact/company just created: NEW dated from its DATE_CREATE when the option is on."""
    if not opts.new_for_new_entities:
        return None
    return Entity(status=NEW, status_set_on=created_on)


def is_terminal(code: str | None) -> bool:
    return normalize_status(code) == LOST
