"""Robot `call_cadence`: after an unanswered call, call tasks on a schedule over eight weeks until the
first completed call; its timer sets each task and, after the last, moves the item on."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from addon.models import RobotTimer, naive_utc
from addon.robots import logic
from addon.robots.calls import OWNER_TYPE, STAGE_FIELD, TASK_PREFIX, RobotCall, as_int, is_closed, prop_str
from addon.robots.robot import Robot, names, prop
from addon.robots.store import cancel_timers, upsert_timer

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "call_cadence",
    names("Не забыт: график дозвона", "Nezabyt: call-attempt cadence"),
    names("Задачи позвонить: 1-я неделя через день, 2–4-я два раза в неделю (один в выходной), 5–8-я раз "
          "в неделю, в часы 13–15 и 19–21; до первого состоявшегося звонка; в конце — перевод в стадию.",
          "Call tasks: week 1 every other day, weeks 2–4 twice a week (one at a weekend), weeks 5–8 "
          "weekly, at 13–15 and 19–21; until the first completed call; at the end, a move to a stage."),
    {"final_stage": prop("Стадия в конце (код, например «На закрытие»)",
                         "Stage at the end (ID, e.g. 'To close')", "string")},
)


def handle(run: Run, call: RobotCall, item: dict) -> None:
    slots = logic.call_cadence(run.local_now)
    # Entering the stage again starts a new cadence; the old one stops.
    cancel_timers(run.session, run.portal_id, call.document_id, "call_cadence")
    state = {"document_type": call.document_type, "entity_id": call.entity_id, "started_at": run.now.isoformat(),
             "stage": item.get(STAGE_FIELD[call.document_type]), "next": 0,
             "slots": [[s.start.isoformat(), s.end.isoformat()] for s in slots],
             "final_stage": prop_str(call.properties.get("final_stage")), "tasks": 0}
    upsert_timer(run.session, run.portal_id, "call_cadence", f"cadence:{call.event_id}", call.document_id,
                 slots[0].start, state)


def _completed_call_since(run: Run, document_type: str, entity_id: int, item: dict | None, since: dt.datetime) -> bool:
    owners = [(OWNER_TYPE[document_type], entity_id)]
    if item and as_int(item.get("CONTACT_ID")):
        owners.append((3, int(item["CONTACT_ID"])))
    since_local = run.ctx.local(since).isoformat()
    commands = {f"o{t}_{i}": ("crm.activity.list", {"filter": {"OWNER_TYPE_ID": t, "OWNER_ID": i, "TYPE_ID": 2,
                                                               "COMPLETED": "Y", ">=START_TIME": since_local},
                                                    "select": ["ID", "START_TIME", "END_TIME"]})
                for t, i in owners}
    answer = run.client.batch(commands)
    return any(answer.results.get(k) for k in commands)


def fire(run: Run, timer: RobotTimer) -> None:
    st = dict(timer.state)
    document_type, entity_id = st["document_type"], int(st["entity_id"])
    item = run.item(document_type, entity_id)
    if item is None or is_closed(document_type, item) or item.get(STAGE_FIELD[document_type]) != st.get("stage"):
        timer.status = "cancelled"  # the item left the stage: the reason to call is gone
        return
    if _completed_call_since(run, document_type, entity_id, item, dt.datetime.fromisoformat(st["started_at"])):
        timer.status = "done"
        st["outcome"] = "called"
        timer.state = st
        return
    slots = st["slots"]
    n = int(st["next"])
    key = f"timer:{timer.id}:{n}"
    if n >= len(slots):
        timer.status = "done"
        st["outcome"] = "no_answer"
        timer.state = st
        if st.get("final_stage"):
            run.update_item(f"{key}:final", document_type, entity_id, {STAGE_FIELD[document_type]: st["final_stage"]})
        return
    start, end = (dt.datetime.fromisoformat(v) for v in slots[n])
    run.task(f"{key}:task", as_int(item.get("ASSIGNED_BY_ID")),
             run.t("call_title", n=n + 1, total=len(slots)),
             run.t("call_body", item=run.title(document_type, entity_id, item),
                   start=start.strftime("%H:%M"), end=end.strftime("%H:%M")),
             [f"{TASK_PREFIX[document_type]}_{entity_id}"], deadline=end)
    st["next"] = n + 1
    st["tasks"] = int(st.get("tasks", 0)) + 1
    timer.state = st
    # The next attempt, or after the last one a final look at its end: moved on if still no call.
    timer.due_at = naive_utc(dt.datetime.fromisoformat(slots[n + 1][0]) if n + 1 < len(slots) else end)


TIMERS = {"call_cadence": fire}
