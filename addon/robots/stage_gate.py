"""Robot `stage_gate`: an item that skipped the required stage goes back, and the responsible is told."""
from __future__ import annotations

from typing import TYPE_CHECKING

from addon.robots.calls import STAGE_FIELD, RobotCall, as_int, prop_str
from addon.robots.robot import Robot, names, prop
from addon.robots.store import has_record

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "stage_gate",
    names("Не забыт: не перепрыгивать стадию", "Nezabyt: no skipping the stage"),
    names("Возвращает элемент, который не прошёл обязательную стадию.",
          "Sends back an item that skipped a required stage."),
    {"required_stage": prop("Обязательная стадия (код)", "Required stage (ID)", "string", required=True),
     "previous_stage": prop("Вернуть в стадию (код)", "Send back to stage (ID)", "string")},
    {"passed": prop("Стадия пройдена", "Stage passed", "bool")},
)


def handle(run: Run, call: RobotCall, item: dict) -> None:
    key = f"call:{call.event_id}"
    required = prop_str(call.properties.get("required_stage"))
    passed = (not required or has_record(run.session, run.portal_id, "reached", call.document_id, required)
              or required in run.stage_history(call.document_type, call.entity_id))
    if passed:
        run.reply(key, call.event_token, {"passed": "Y"}, "the required stage was passed")
        return
    back = run.previous_stage(call.document_type, item, prop_str(call.properties.get("previous_stage")))
    if back:
        run.update_item(f"{key}:back", call.document_type, call.entity_id, {STAGE_FIELD[call.document_type]: back})
    message = run.t("gate_back", item=run.title(call.document_type, call.entity_id, item), stage=required)
    run.notify(f"{key}:gate", as_int(item.get("ASSIGNED_BY_ID")), message)
    run.reply(key, call.event_token, {"passed": "N"}, message)
