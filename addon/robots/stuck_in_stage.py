"""Robot `stuck_in_stage`: an item still in the stage after N hours is listed, once a day while it
stays, in one message per supervisor at the portal's notification time (the `stuck_digest` timer)."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select

from addon.models import RobotRecord, RobotTimer
from addon.robots import logic
from addon.robots.calls import STAGE_FIELD, RobotCall, as_int, is_closed, prop_int
from addon.robots.robot import Robot, names, prop
from addon.robots.store import add_record, cancel_timers, upsert_timer
from addon.robots.texts import item_link

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "stuck_in_stage",
    names("Не забыт: завис в стадии", "Nezabyt: stuck in stage"),
    names("Элемент, который дольше N часов в стадии, попадает в ежедневную сводку руководителя.",
          "An item that stays longer than N hours in the stage is listed in the supervisor's daily digest."),
    {"hours": prop("Часов в стадии", "Hours in the stage", "int", required=True, default=24)},
)


def handle(run: Run, call: RobotCall, item: dict) -> None:
    hours = max(prop_int(call.properties.get("hours"), 24), 1)
    stage = str(item.get(STAGE_FIELD[call.document_type]) or "")
    cancel_timers(run.session, run.portal_id, call.document_id, "stuck_in_stage")
    upsert_timer(run.session, run.portal_id, "stuck_in_stage", f"stuck:{call.event_id}", call.document_id,
                 run.now + dt.timedelta(hours=hours),
                 {"document_type": call.document_type, "entity_id": call.entity_id, "stage": stage,
                  "entered_at": run.now.isoformat(), "hours": hours})


def fire(run: Run, timer: RobotTimer) -> None:
    st = dict(timer.state)
    document_type, entity_id = st["document_type"], int(st["entity_id"])
    item = run.item(document_type, entity_id)
    entered = dt.datetime.fromisoformat(st["entered_at"])
    if item is None or is_closed(document_type, item) or not logic.is_stuck(
            entered, st["stage"], str(item.get(STAGE_FIELD[document_type]) or ""), run.now, st["hours"]):
        timer.status = "done"
        return
    add_record(run.session, run.portal_id, "stuck", timer.document_id, run.now,
               as_int(item.get("ASSIGNED_BY_ID")), f"{st['stage']}|{entered.isoformat()}|{item.get('TITLE') or ''}")
    # Listed again in every daily digest while it stays.
    timer.due_at = run.now + dt.timedelta(days=1)
    digest_at = dt.datetime.combine(run.local_now.date(), run.ctx.opts.notify_clock(), run.ctx.tz)
    if digest_at <= run.local_now:
        digest_at += dt.timedelta(days=1)
    day = digest_at.date().isoformat()
    upsert_digest(run, day, digest_at)


def upsert_digest(run: Run, day: str, due: dt.datetime) -> None:
    key = f"stuck_digest:{day}"
    exists = run.session.scalar(select(RobotTimer.id).where(RobotTimer.portal_id == run.portal_id,
                                                            RobotTimer.key == key))
    if exists is None:
        upsert_timer(run.session, run.portal_id, "stuck_digest", key, "PORTAL", due, {"day": day})


def fire_digest(run: Run, timer: RobotTimer) -> None:
    rows = run.session.scalars(select(RobotRecord).where(
        RobotRecord.portal_id == run.portal_id, RobotRecord.kind == "stuck",
        RobotRecord.reported_at.is_(None)).order_by(RobotRecord.id)).all()
    by_recipient: dict[int, list[str]] = {}
    for row in rows:
        recipient = run.supervisor(row.user_id) or row.user_id
        stage, since, title = (row.value or "||").split("|", 2)
        document_type, _, entity_id = row.document_id.partition("_")
        line = run.t("stuck_line", item=item_link(document_type.lower(), int(entity_id), title or None),
                     stage=stage, user=run.user_name(row.user_id),
                     since=run.ctx.local(dt.datetime.fromisoformat(since)).strftime("%d.%m %H:%M"))
        if recipient:
            by_recipient.setdefault(recipient, [])
            if line not in by_recipient[recipient]:
                by_recipient[recipient].append(line)
        row.reported_at = run.now
    for recipient, lines in by_recipient.items():
        run.notify(f"stuck:{timer.state['day']}", recipient, "\n".join([run.t("stuck_header"), *lines]))
    timer.status = "done"


TIMERS = {"stuck_in_stage": fire, "stuck_digest": fire_digest}
