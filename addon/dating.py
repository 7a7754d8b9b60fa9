"""The service table's due and warning dates under the portal's options: `redate` after a settings
change (no REST), and `preview_changes`, the what-if preview the admin sees before saving new day
limits. Read by the worker's daily run and by the settings page."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import select, update

from addon import engine, rules
from addon.models import PortalSettings, TrackedEntity
from addon.options import Options

SAMPLE_SIZE = 20


def redate(services, portal_id: int) -> int:
    """Recompute every row's due and warning dates from the stored options (after a settings
    change), and mark the table as dated under their version in the same transaction."""
    n = 0
    with services.sessions() as session:
        ctx = engine.load_context(session, portal_id)
        opts = ctx.opts
        last = 0
        while True:
            rows = session.scalars(select(TrackedEntity).where(TrackedEntity.portal_id == portal_id,
                                                               TrackedEntity.id > last)
                                   .order_by(TrackedEntity.id).limit(2000)).all()
            if not rows:
                break
            for row in rows:
                last = row.id
                engine.store(row, engine.entity_of(row), opts)
                n += 1
            session.flush()
        # Only if the options did not change meanwhile (a save during the re-date dates again).
        session.execute(update(PortalSettings).where(PortalSettings.portal_id == portal_id,
                                                     PortalSettings.version == ctx.settings_version)
                        .values(dated_version=ctx.settings_version))
        session.commit()
    return n


def preview_changes(services, portal_id: int, new_options: Options, today: dt.date) -> dict[str, Any]:
    """What the next daily run (on `today`) would change under `new_options`, against what it
    would change under the current ones: counts by transition and by manager, and a sample."""
    by_status: Counter[str] = Counter()
    by_manager: Counter[int] = Counter()
    current_changes = 0
    due_moved = 0
    sample: list[dict[str, Any]] = []
    changing = 0
    with services.sessions() as session:
        old_opts = engine.load_context(session, portal_id).opts
        last = 0
        while True:
            rows = session.scalars(select(TrackedEntity).where(
                TrackedEntity.portal_id == portal_id, TrackedEntity.id > last, TrackedEntity.status.is_not(None))
                .order_by(TrackedEntity.id).limit(2000)).all()
            if not rows:
                break
            for row in rows:
                last = row.id
                e = engine.entity_of(row)
                _, old_steps = rules.decay_through(old_opts, e, today)
                new_e, steps = rules.decay_through(new_options, e, today)
                if old_steps:
                    current_changes += 1
                if rules.due_date(new_options, e) != rules.due_date(old_opts, e):
                    due_moved += 1
                if not steps:
                    continue
                changing += 1
                by_status[f"{steps[0].from_status}->{new_e.status}"] += 1
                by_manager[row.assigned_by_id or 0] += 1
                if len(sample) < SAMPLE_SIZE:
                    sample.append({"entity_type": row.entity_type, "entity_id": row.entity_id, "title": row.title,
                                   "manager_id": row.assigned_by_id, "from_status": steps[0].from_status,
                                   "to_status": new_e.status, "steps": len(steps)})
    return {"day": today.isoformat(), "entities": changing, "by_status": dict(by_status),
            "by_manager": {int(k): v for k, v in by_manager.items()}, "sample": sample,
            "with_current_options": current_changes, "due_dates_moved": due_moved}
