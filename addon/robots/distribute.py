"""Robot `distribute`: hands the item to the next manager of a pool (round robin, least loaded or by
the monthly ranking) and, if set, gives them a task to contact the client within N minutes."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from addon.robots.calls import TASK_PREFIX, RobotCall, prop_int
from addon.robots.distribution import choose_manager
from addon.robots.robot import Robot, names, pool_properties, prop
from addon.robots.store import add_record

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "distribute",
    names("Не забыт: распределить менеджеру", "Nezabyt: distribute to a manager"),
    names("Назначает ответственного из очереди менеджеров: по кругу, наименее загруженному или по рейтингу; "
          "пропускает уволенных и отсутствующих.",
          "Assigns a manager from a pool: round robin, least loaded or by the monthly ranking; skips "
          "deactivated and absent users."),
    {**pool_properties(),
     "task_minutes": prop("Задача связаться с клиентом за (мин., 0 — без задачи)",
                          "Task to contact the client within (min; 0 = no task)", "int", default=0)},
    {"assigned_user": prop("Назначенный менеджер", "Assigned manager", "user")},
)


def handle(run: Run, call: RobotCall, item: dict) -> None:
    chosen = choose_manager(run, call.document_type, call.properties)
    key = f"call:{call.event_id}"
    if chosen is None:
        run.reply(key, call.event_token, {"assigned_user": ""}, run.t("nobody"))
        return
    run.update_item(f"{key}:assign", call.document_type, call.entity_id, {"ASSIGNED_BY_ID": chosen})
    add_record(run.session, run.portal_id, "assigned", call.document_id, run.now, chosen, "distribute")
    title = run.title(call.document_type, call.entity_id, item)
    run.notify(f"{key}:assigned", chosen, run.t("assigned", item=title))
    minutes = prop_int(call.properties.get("task_minutes"), 0)
    if minutes > 0:  # seed 004: the robot also sets the chosen manager a task to call the client
        deadline = run.local_now + dt.timedelta(minutes=minutes)
        run.task(f"{key}:contact", chosen, run.t("contact_title"),
                 run.t("contact_body", item=title, deadline=deadline.strftime("%d.%m.%Y %H:%M")),
                 [f"{TASK_PREFIX[call.document_type]}_{call.entity_id}"], deadline=deadline)
    run.reply(key, call.event_token, {"assigned_user": f"user_{chosen}"}, f"→ {run.user_name(chosen)}")
