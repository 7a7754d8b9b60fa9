"""Robot `close_reason`: on a losing stage the close reason is recorded for the dashboard; an empty
one sends the item back to its previous stage with a message to the responsible."""
from __future__ import annotations

from typing import TYPE_CHECKING

from addon.robots import logic
from addon.robots.calls import STAGE_FIELD, RobotCall, as_int, prop_str
from addon.robots.robot import Robot, names, prop
from addon.robots.store import add_record

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "close_reason",
    names("Не забыт: причина закрытия обязательна", "Nezabyt: reason required to close"),
    names("На проигрышной стадии пустая причина возвращает элемент на предыдущую стадию с сообщением; "
          "причины считаются для отчёта.",
          "On a losing stage an empty reason sends the item back to its previous stage with a message; "
          "reasons are counted for the dashboard."),
    {"reason_field": prop("Поле причины (код)", "Reason field (code)", "string", required=True),
     "previous_stage": prop("Предыдущая стадия (код)", "Previous stage (ID)", "string")},
    {"reason": prop("Причина", "Reason", "string")},
)


def handle(run: Run, call: RobotCall, item: dict) -> None:
    key = f"call:{call.event_id}"
    reason_field = prop_str(call.properties.get("reason_field"))
    reason = logic.close_reason(item, reason_field, run.field_labels(call.document_type, reason_field)) \
        if reason_field else None
    if reason:
        add_record(run.session, run.portal_id, "close_reason", call.document_id, run.now,
                   as_int(item.get("ASSIGNED_BY_ID")), reason)
        run.reply(key, call.event_token, {"reason": reason}, f"close reason: {reason}")
        return
    message = run.t("reason_missing", item=run.title(call.document_type, call.entity_id, item))
    back = run.previous_stage(call.document_type, item, prop_str(call.properties.get("previous_stage")))
    if back:
        run.update_item(f"{key}:back", call.document_type, call.entity_id, {STAGE_FIELD[call.document_type]: back})
    run.notify(f"{key}:reason", as_int(item.get("ASSIGNED_BY_ID")), message)
    run.reply(key, call.event_token, {"reason": ""}, message)
