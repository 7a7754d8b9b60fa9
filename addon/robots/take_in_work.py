"""Robot `take_in_work`: the responsible must touch the item (an activity, a comment, a stage change,
an edit) within N minutes, else it goes to the next manager of the pool, at most K times; its timer
checks when the minutes are up."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select

from addon.engine import parse_portal_time
from addon.models import RobotTimer, naive_utc
from addon.robots import logic
from addon.robots.calls import OWNER_TYPE, STAGE_FIELD, RobotCall, as_int, is_closed, prop_int
from addon.robots.distribution import choose_manager
from addon.robots.robot import Robot, names, pool_properties, prop
from addon.robots.store import add_record, upsert_timer

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "take_in_work",
    names("Не забыт: взять в работу за N минут", "Nezabyt: take in work within N minutes"),
    names("Если ответственный не тронул элемент (дело, комментарий, смена стадии, правка) за N минут, элемент "
          "передаётся следующему менеджеру; сообщения обоим и руководителю; не более K раз.",
          "If the responsible does not touch the item (activity, comment, stage change, edit) in N minutes, it "
          "goes to the next manager; both and the supervisor are told; at most K times."),
    {"minutes": prop("Минут на реакцию", "Minutes to react", "int", required=True, default=15),
     "max_reassign": prop("Передавать не более (раз)", "Reassign at most (times)", "int", default=2),
     **pool_properties()},
    {"sla_met": prop("Взят в работу вовремя", "Taken in work in time", "bool"),
     "responsible": prop("Ответственный", "Responsible", "user")},
)


SLA_PROPS = ("mode", "users", "departments", "absent", "pool")


def handle(run: Run, call: RobotCall, item: dict) -> None:
    minutes = max(prop_int(call.properties.get("minutes"), 15), 1)
    responsible = as_int(item.get("ASSIGNED_BY_ID"))
    if responsible not in run.users():
        # Nobody active to wait for (no responsible, or a deactivated one): hand it out first.
        chosen = choose_manager(run, call.document_type, call.properties)
        if chosen is not None:
            run.update_item(f"call:{call.event_id}:assign", call.document_type, call.entity_id,
                            {"ASSIGNED_BY_ID": chosen})
            add_record(run.session, run.portal_id, "assigned", call.document_id, run.now, chosen, "sla")
            run.notify(f"call:{call.event_id}:assigned", chosen,
                       run.t("assigned", item=run.title(call.document_type, call.entity_id, item)))
            responsible = chosen
    state = {"event_token": call.event_token, "document_type": call.document_type, "entity_id": call.entity_id,
             "minutes": minutes, "max_reassign": max(prop_int(call.properties.get("max_reassign"), 2), 0),
             "reassigned": 0, "assigned_to": responsible, "assigned_at": run.now.isoformat(),
             "stage": item.get(STAGE_FIELD[call.document_type]), "tried": [responsible] if responsible else [],
             "pool": {k: call.properties.get(k) for k in SLA_PROPS}}
    # A new watch on the item ends the old one; its workflow gets its answer instead of timing out.
    older = run.session.scalars(select(RobotTimer).where(
        RobotTimer.portal_id == run.portal_id, RobotTimer.document_id == call.document_id,
        RobotTimer.robot == "take_in_work", RobotTimer.status == "waiting")).all()
    for timer in older:
        timer.status = "cancelled"
        run.reply(f"timer:{timer.id}:superseded", timer.state.get("event_token", ""),
                  {"sla_met": "N", "responsible": f"user_{timer.state.get('assigned_to')}"},
                  "SLA watch replaced by a new one")
    upsert_timer(run.session, run.portal_id, "take_in_work", f"sla:{call.event_id}", call.document_id,
                 run.now + dt.timedelta(minutes=minutes), state)


def _touch_times(run: Run, document_type: str, entity_id: int, since: dt.datetime) -> tuple[list, list]:
    """When activities and timeline comments were added to the item since `since` (one batch)."""
    since_local = run.ctx.local(since).isoformat()
    answer = run.client.batch({
        "activities": ("crm.activity.list", {"filter": {"OWNER_TYPE_ID": OWNER_TYPE[document_type],
                                                        "OWNER_ID": entity_id, ">=CREATED": since_local},
                                             "select": ["ID", "CREATED"]}),
        "comments": ("crm.timeline.comment.list", {"filter": {"ENTITY_TYPE": document_type, "ENTITY_ID": entity_id},
                                                   "select": ["ID", "CREATED"]}),
    })

    def times(key: str) -> list[dt.datetime]:
        rows = answer.results.get(key) or []
        if isinstance(rows, dict):
            rows = rows.get("items") or list(rows.values())
        out = []
        for row in rows:
            moment = parse_portal_time(row.get("CREATED") if isinstance(row, dict) else None, run.ctx.tz)
            if moment is not None:
                out.append(naive_utc(moment))
        return out

    return times("activities"), times("comments")


def fire(run: Run, timer: RobotTimer) -> None:
    st = dict(timer.state)
    document_type, entity_id = st["document_type"], int(st["entity_id"])
    item = run.item(document_type, entity_id)
    assigned_at = dt.datetime.fromisoformat(st["assigned_at"])
    assigned_to = as_int(st.get("assigned_to"))
    key = f"timer:{timer.id}:{st['reassigned']}"
    if item is None:
        check = logic.SlaCheck(exists=False, responsible=None, stage=None)
    else:
        activities, comments = _touch_times(run, document_type, entity_id, assigned_at)
        edited = None
        if as_int(item.get("MODIFY_BY_ID")) == assigned_to:
            moment = parse_portal_time(item.get("DATE_MODIFY"), run.ctx.tz)
            edited = naive_utc(moment) if moment else None
        check = logic.SlaCheck(exists=True, responsible=as_int(item.get("ASSIGNED_BY_ID")),
                               stage=item.get(STAGE_FIELD[document_type]), closed=is_closed(document_type, item),
                               activity_times=tuple(activities), comment_times=tuple(comments),
                               edited_by_responsible_at=edited)
    verdict = logic.sla_verdict(check, assigned_to, assigned_at, st.get("stage"))
    title = run.title(document_type, entity_id, item)
    if verdict == "met":
        timer.status = "done"
        run.reply(key, st["event_token"], {"sla_met": "Y", "responsible": f"user_{assigned_to}"},
                  f"SLA met by {run.user_name(assigned_to)}")
        return
    if verdict == "gone":
        timer.status = "cancelled"
        responsible = check.responsible or assigned_to
        run.reply(key, st["event_token"], {"sla_met": "N", "responsible": f"user_{responsible}" if responsible else ""},
                  "SLA watch ended: the item was deleted, closed or reassigned by hand")
        return
    minutes = int(st["minutes"])
    step = logic.sla_next_step(int(st["reassigned"]), int(st["max_reassign"]))
    supervisor = run.supervisor(assigned_to)
    if step == "give_up":
        timer.status = "done"
        message = run.t("sla_give_up", item=title, times=st["reassigned"], old=run.user_name(assigned_to))
        run.notify(f"{key}:give_up", supervisor, message)
        run.reply(key, st["event_token"], {"sla_met": "N", "responsible": f"user_{assigned_to}"}, message)
        return
    tried = [u for u in st.get("tried") or [] if u]
    new = choose_manager(run, document_type, st.get("pool") or {}, exclude=set(tried) | {assigned_to})
    if new is None:  # everyone had a turn: anyone but the one who just missed it
        new = choose_manager(run, document_type, st.get("pool") or {}, exclude={assigned_to})
    if new is None:
        timer.status = "done"
        run.notify(f"{key}:nobody", supervisor, run.t("sla_give_up", item=title, times=st["reassigned"],
                                                      old=run.user_name(assigned_to)))
        run.reply(key, st["event_token"], {"sla_met": "N", "responsible": f"user_{assigned_to}"}, run.t("nobody"))
        return
    run.update_item(f"{key}:reassign", document_type, entity_id, {"ASSIGNED_BY_ID": new})
    add_record(run.session, run.portal_id, "assigned", f"{document_type.upper()}_{entity_id}", run.now, new, "sla")
    names = {"item": title, "old": run.user_name(assigned_to), "new": run.user_name(new), "minutes": minutes}
    run.notify(f"{key}:new", new, run.t("sla_new", **names))
    run.notify(f"{key}:old", assigned_to, run.t("sla_old", **names))
    if supervisor and supervisor not in (new, assigned_to):
        run.notify(f"{key}:supervisor", supervisor, run.t("sla_supervisor", **names))
    st.update(assigned_to=new, assigned_at=run.now.isoformat(), reassigned=int(st["reassigned"]) + 1,
              tried=tried + [new], stage=item.get(STAGE_FIELD[document_type]) if item else st.get("stage"))
    timer.state = st
    timer.due_at = run.now + dt.timedelta(minutes=minutes)
    timer.status = "waiting"


TIMERS = {"take_in_work": fire}
