"""The reference model of one entity's life: events and daily runs applied in date order with
the pure rules. Tests use it as the oracle, and so does the worker's end-to-end simulation."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from addon.options import Options

from .ladder import (Entity, Step, apply_deals, decay_through, handle_manual_change, new_entity,
                     normalize_status, record_call, set_status)

EVENT_KINDS = ("call", "manual", "deal", "import", "new")


def apply_event(opts: Options, e: Entity, day: dt.date, kind: str,
                data: dict[str, Any]) -> tuple[Entity, list[Step]]:
    """One event dated `day`:
    "call" {}; "manual" {status, reason?} (checked: allowed → recorded, else a revert step and
    nothing changes); "deal" {open_deals, outcome?}; "import" {status} (set without checks);
    "new" {} (the entity was created that day: NEW if the option is on and it has no status yet)."""
    if kind == "call":
        return record_call(opts, e, day)
    if kind == "manual":
        e, steps, _ = handle_manual_change(opts, e, data.get("status"), day, e.last_call_on,
                                           data.get("reason"))
        return e, steps
    if kind == "deal":
        return apply_deals(opts, e, data.get("open_deals", 0), data.get("outcome"), day)
    if kind == "import":
        return set_status(opts, e, data.get("status"), day, "import")
    if kind == "new":
        created = new_entity(opts, day)
        if created is None or normalize_status(e.status) is not None:
            return e, []
        return set_status(opts, e, created.status, day, "new")
    raise ValueError(f"unknown event kind {kind!r}")


def simulate(opts: Options, initial: Entity, events: Iterable[tuple[dt.date, str, dict[str, Any]]],
             run_days: Iterable[dt.date], until: dt.date) -> tuple[Entity, list[Step]]:
    """The entity's state on `until` and every step on the way. Events are applied in date order
    (stable for one day); a daily run on day D decays everything due on or before D and runs
    before that day's events — the order must not matter, and the property tests check it."""
    timeline: list[tuple[dt.date, int, int, str, dict[str, Any]]] = []
    for n, day in enumerate(sorted(set(run_days))):
        if day <= until:
            timeline.append((day, 0, n, "run", {}))
    for n, (day, kind, data) in enumerate(events):
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if day <= until:
            timeline.append((day, 1, n, kind, data))
    timeline.sort(key=lambda t: t[:3])
    e, steps = initial, []
    for day, _, _, kind, data in timeline:
        if kind == "run":
            e, more = decay_through(opts, e, day)
        else:
            e, more = apply_event(opts, e, day, kind, data)
        steps += more
    e, more = decay_through(opts, e, until)
    return e, steps + more
