"""Robot `required_fields`: the listed fields must be filled; else a task to the responsible naming
what is missing and, if set, the item goes back to its previous stage."""
from __future__ import annotations

from typing import TYPE_CHECKING

from addon.robots import logic
from addon.robots.calls import STAGE_FIELD, TASK_PREFIX, RobotCall, as_int, prop_bool, prop_list, prop_str
from addon.robots.robot import Robot, names, prop

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "required_fields",
    names("Не забыт: обязательные поля стадии", "Nezabyt: required fields before moving on"),
    names("Проверяет, что поля заполнены; иначе задача ответственному со списком и, если включено, "
          "возврат на предыдущую стадию.",
          "Checks the fields are filled; else a task to the responsible listing what is missing and, if "
          "set, back to the previous stage."),
    {"fields": prop("Поля (коды)", "Fields (codes)", "string", required=True, multiple=True),
     "send_back": prop("Вернуть на предыдущую стадию", "Send back to the previous stage", "bool",
                       default="Y"),
     "previous_stage": prop("Предыдущая стадия (код)", "Previous stage (ID)", "string")},
    {"complete": prop("Все поля заполнены", "All fields filled", "bool"),
     "missing": prop("Не заполнены", "Missing", "string")},
)


def handle(run: Run, call: RobotCall, item: dict) -> None:
    key = f"call:{call.event_id}"
    fields = prop_list(call.properties.get("fields"))
    missing = logic.missing_fields(item, fields)
    if not missing:
        run.reply(key, call.event_token, {"complete": "Y", "missing": ""}, "all required fields are filled")
        return
    title = run.title(call.document_type, call.entity_id, item)
    body = run.t("fields_body", item=title, fields=", ".join(missing))
    if prop_bool(call.properties.get("send_back"), True):
        back = run.previous_stage(call.document_type, item, prop_str(call.properties.get("previous_stage")))
        if back:
            run.update_item(f"{key}:back", call.document_type, call.entity_id, {STAGE_FIELD[call.document_type]: back})
            body += run.t("fields_back")
    run.task(f"{key}:task", as_int(item.get("ASSIGNED_BY_ID")), run.t("fields_title"), body,
             [f"{TASK_PREFIX[call.document_type]}_{call.entity_id}"])
    run.reply(key, call.event_token, {"complete": "N", "missing": ", ".join(missing)}, body)
