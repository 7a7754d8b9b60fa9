"""Late events: a completed call that reaches us after a daily run already decayed the entity
past the call's day (Bitrix24 delivers events late, reconcile catches missed ones minutes later,
the worker may have been down). Status is a function of the entity's history and the day, so the
decay steps the call would have prevented are undone and the entity is replayed from the call.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from .ladder import Entity, Step, decay_through, record_call


@dataclass(frozen=True)
class Replay:
    entity: Entity
    undone: tuple[Step, ...]  # the decay steps taken back, oldest first
    steps: tuple[Step, ...]  # the steps of the replay (decays from the call's new base), oldest first

    @property
    def changed(self) -> bool:
        return bool(self.undone) or bool(self.steps)


def late_call(opts, e: Entity, call_day: dt.date, today: dt.date, decays_since: Sequence[Step],
              prior_set_on: dt.date | None, prior_previous: str | None) -> Replay:
    """Apply a completed call dated `call_day` to `e`, which is current through `today`.

    `decays_since` are the entity's most recent history steps, all of cause "decay", oldest
    first (the caller passes only those after the last non-decay step). Those dated after
    `call_day` would not have happened had the call been seen in time: they are undone, i.e. the
    entity returns to the status the first of them left (`prior_set_on` is the day that status was
    set and `prior_previous` the status before it, both from history), the call is applied, and
    the entity decays again through `today` from its new base."""
    undone = tuple(s for s in decays_since if s.on > call_day)
    if any(s.cause != "decay" for s in decays_since):
        raise ValueError("only decay steps can be undone by a late call")
    if not undone:
        after_call, steps = record_call(opts, e, call_day)
        e2, more = decay_through(opts, after_call, today)
        return Replay(e2, (), tuple(steps + more))
    first = undone[0]
    rewound = Entity(status=first.from_status, status_set_on=prior_set_on, last_call_on=e.last_call_on,
                     previous_status=prior_previous, status_before_deal=None, open_deals=e.open_deals)
    after_call, steps = record_call(opts, rewound, call_day)
    e2, more = decay_through(opts, after_call, today)
    return Replay(e2, undone, tuple(steps + more))
