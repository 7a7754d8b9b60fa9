"""Robot `ranking_stage`: placed on the ranking stage, it records that the manager brought the item
there; the monthly ranking (`store.ranking_report`) weighs the next month's distribution by it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from addon.robots.calls import STAGE_FIELD, RobotCall, as_int, prop_float
from addon.robots.robot import Robot, names, prop
from addon.robots.store import add_record, has_record, put_state

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "ranking_stage",
    names("Не забыт: стадия рейтинга", "Nezabyt: ranking stage"),
    names("Ставится на стадию рейтинга (например «Встреча состоялась»): отмечает, что менеджер провёл "
          "элемент через неё; из рейтинга месяца слабейшие трое получают меньшую долю.",
          "Placed on the ranking stage (e.g. 'Meeting held'): records the manager's conversion; the "
          "weakest three of the month get a smaller share of the next month's distribution."),
    {"share": prop("Доля слабейших трёх", "Share of the weakest three", "double", default="0.5")},
)


def handle(run: Run, call: RobotCall, item: dict) -> None:
    stage = str(item.get(STAGE_FIELD[call.document_type]) or "")
    if not has_record(run.session, run.portal_id, "reached", call.document_id):
        add_record(run.session, run.portal_id, "reached", call.document_id, run.now,
                   as_int(item.get("ASSIGNED_BY_ID")), stage)
    share = prop_float(call.properties.get("share"), 0.5)
    put_state(run.session, run.portal_id, f"ranking_config:{call.document_type}", {"share": share, "stage": stage})
