"""Robot `appointment_reminder`: a task to confirm an appointment N working days before the date in a
field; its timer re-reads the date daily, so a moved appointment re-plans the reminder."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from addon.engine import parse_portal_time
from addon.models import RobotTimer, naive_utc
from addon.robots import logic
from addon.robots.calls import TASK_PREFIX, RobotCall, as_int, is_closed, prop_int, prop_str
from addon.robots.robot import Robot, names, prop
from addon.robots.store import upsert_timer

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "appointment_reminder",
    names("Не забыт: напомнить перед встречей", "Nezabyt: reminder before an appointment"),
    names("Задача подтвердить встречу за N рабочих дней до даты из поля; перепланируется при переносе.",
          "A task to confirm N working days before a date field; re-planned when the date moves."),
    {"date_field": prop("Поле даты (код)", "Date field (code)", "string", required=True),
     "days_before": prop("За сколько рабочих дней", "Working days before", "int", default=1),
     "title": prop("Текст задачи", "Task title", "string",
                   default="Подтвердить встречу с клиентом")},
)


def _appointment(run: Run, item: dict, date_field: str) -> dt.datetime | None:
    value = {str(k).upper(): v for k, v in item.items()}.get(date_field.upper())
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    moment = parse_portal_time(value, run.ctx.tz)
    return moment.astimezone(run.ctx.tz) if moment else None


def _plan_reminder(run: Run, timer: RobotTimer, item: dict) -> None:
    st = dict(timer.state)
    document_type, entity_id = st["document_type"], int(st["entity_id"])
    appointment = _appointment(run, item, st["date_field"])
    days = int(st["days_before"])
    # A date without a time (a date field, or midnight) is the whole day: it has not passed until its end.
    whole_day = appointment is not None and appointment.time() == dt.time(0)
    until = appointment + dt.timedelta(days=1, minutes=-1) if whole_day else appointment
    plan = logic.reminder_plan(until, days, run.local_now)
    st["appointment"] = appointment.isoformat() if appointment else None
    if plan == "none":
        timer.status = "done"
    elif plan == "now":
        if st.get("reminded_for") != st["appointment"]:
            shown = appointment.strftime("%d.%m.%Y" if whole_day else "%d.%m.%Y %H:%M")
            run.task(f"timer:{timer.id}:{st['appointment']}", as_int(item.get("ASSIGNED_BY_ID")), st["title"],
                     run.t("reminder_body", item=run.title(document_type, entity_id, item), date=shown),
                     [f"{TASK_PREFIX[document_type]}_{entity_id}"], deadline=until)
            st["reminded_for"] = st["appointment"]
        # Keep watching until the appointment: if it moves, the reminder is planned again.
        timer.due_at = naive_utc(min(until, run.local_now + dt.timedelta(days=1)))
        timer.status = "waiting"
    else:
        moment = logic.reminder_moment(until, days)
        # Look again daily until then, so a moved date re-plans the reminder in time.
        timer.due_at = naive_utc(min(moment, run.local_now + dt.timedelta(days=1)))
        timer.status = "waiting"
    timer.state = st


def handle(run: Run, call: RobotCall, item: dict) -> None:
    date_field = prop_str(call.properties.get("date_field"))
    state = {"document_type": call.document_type, "entity_id": call.entity_id, "date_field": date_field,
             "days_before": max(prop_int(call.properties.get("days_before"), 1), 0),
             "title": prop_str(call.properties.get("title")) or run.t("reminder_title"), "reminded_for": None}
    timer = upsert_timer(run.session, run.portal_id, "appointment_reminder",
                         f"reminder:{call.document_id}:{date_field}"[:255], call.document_id, run.now, state)
    run.session.flush()
    _plan_reminder(run, timer, item)


def fire(run: Run, timer: RobotTimer) -> None:
    item = run.item(timer.state["document_type"], int(timer.state["entity_id"]))
    if item is None or is_closed(timer.state["document_type"], item):
        timer.status = "cancelled"
        return
    _plan_reminder(run, timer, item)


TIMERS = {"appointment_reminder": fire}
