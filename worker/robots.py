"""Executes the pipeline robots: stored robot calls (`process_robot_calls`) and due robot timers
(`fire_due_timers`). Plain functions over explicit inputs; the worker's schedule calls them.

Each call or timer is decided in its own transaction, which also plans its portal writes (Outbox),
its messages (NotificationLog) and its `bizproc.event.send` reply, all with unique keys; the
planned rows are sent in batches after the commit. A rerun after a crash sends only what is left
and decides nothing twice.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import click
from sqlalchemy import select

from addon.bitrix import directory
from addon.bitrix.errors import PortalError, is_not_found, is_permanent, is_temporary
from addon.engine import (PortalContext, load_context, mark_answers, notification_command,
                          parse_portal_time, plan_message, plan_write)
from addon.models import (PORTAL_ACTIVE, PORTAL_UNINSTALLED, NotificationLog, Outbox, Portal, RobotTimer,
                          StoredEvent, naive_utc, utcnow)
from addon.phones import multifield_phones, normalize_phones, phone_region_for
from addon.robots import logic
from addon.robots.catalog import parse_robot_code
from addon.robots.store import (absent_users, add_record, cancel_timers, get_state, has_record,
                                put_state, ranking_weights_for, upsert_timer)
from addon.robots.texts import item_link, text

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
OWNER_TYPE = {"lead": 1, "deal": 2}
TASK_PREFIX = {"lead": "L", "deal": "D", "contact": "C", "company": "CO"}
STAGE_FIELD = {"lead": "STATUS_ID", "deal": "STAGE_ID"}
SEMANTIC_FIELD = {"lead": "STATUS_SEMANTIC_ID", "deal": "STAGE_SEMANTIC_ID"}
NOTIFY_KIND = "robot"
# Planned robot writes and messages wait in the shared Outbox / NotificationLog under their own
# status and are sent only by `send_robot_writes`, which claims rows (FOR UPDATE SKIP LOCKED on
# PostgreSQL): several workers firing timers at once never send the same write twice.
ROBOT_PENDING = "robot_pending"
SEND_CHUNK = 50


# --- a stored robot call -----------------------------------------------------------------------------

@dataclass
class RobotCall:
    event_id: int
    code: str
    robot: str
    document_type: str
    entity_id: int
    event_token: str
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def document_id(self) -> str:
        return f"{self.document_type.upper()}_{self.entity_id}"


def parse_call(event: StoredEvent) -> RobotCall:
    payload = event.payload or {}
    code = str(payload.get("code") or event.event_name.split(":", 1)[-1])
    parsed = parse_robot_code(code)
    if parsed is None:
        raise ValueError(f"unknown robot {code!r}")
    robot, document_type = parsed
    document = payload.get("document_id")
    if isinstance(document, dict):
        document = [document.get(str(i)) for i in range(3)]
    raw = str(document[2]) if isinstance(document, list) and len(document) >= 3 else ""
    m = re.fullmatch(r"([A-Z]+)_(\d+)", raw)
    if not m or m.group(1).lower() != document_type:
        raise ValueError(f"robot {code} called for document {raw!r}")
    props = payload.get("properties") if isinstance(payload.get("properties"), dict) else {}
    # A robot registered without USE_SUBSCRIPTION Y is not waited for: the portal takes no reply to
    # it (bizproc-event-send.md), so its token is not kept for one.
    subscribed = str(payload.get("use_subscription") or "Y").upper() == "Y"
    token = str(payload.get("event_token") or "") if subscribed else ""
    return RobotCall(event.id, code, robot, document_type, int(m.group(2)), token, props)


# --- property values (externalised by Bitrix24) ----------------------------------------------------

def prop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            out.extend(prop_list(v))
        return out
    return [part.strip() for part in str(value).split(",") if part.strip()]


def prop_users(value: Any) -> list[int]:
    """`user_5`, `5` or lists of them; group codes like `group_e1` are not users."""
    users = []
    for part in prop_list(value):
        m = re.fullmatch(r"(?:user_)?(\d+)", part)
        if m:
            users.append(int(m.group(1)))
    return users


def _first(value: Any) -> str:
    """The first value of a property (a multiple one arrives as a list), as trimmed text."""
    while isinstance(value, (list, tuple, dict)):
        value = (list(value.values()) if isinstance(value, dict) else list(value)) or [None]
        value = value[0]
    return "" if value is None else str(value).strip()


def prop_int(value: Any, default: int) -> int:
    try:
        return int(_first(value)) if _first(value) else default
    except ValueError:
        return default


def prop_float(value: Any, default: float) -> float:
    try:
        return float(_first(value).replace(",", ".")) if _first(value) else default
    except ValueError:
        return default


def prop_bool(value: Any, default: bool) -> bool:
    first = _first(value)
    return first.upper() in ("Y", "1", "TRUE", "YES") if first else default


def prop_str(value: Any) -> str:
    return _first(value)


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "", False) else None
    except (TypeError, ValueError):
        return None


# --- one pass over one portal ----------------------------------------------------------------------


def reads_as_empty(exc: PortalError) -> bool:
    """Whether a refused read may be taken as "nothing there": the item is not found, the method
    does not exist on this portal, or the app was not granted its scope. Anything else — the rate
    limit, a 5xx, the network, a blocked or unpaid portal — must not turn into empty data a robot
    then decides on: it is raised, and the robot call is tried again on a later pass."""
    return is_not_found(exc) or str(exc.code) in ("ERROR_METHOD_NOT_FOUND", "insufficient_scope")


class Run:
    """One pass over one portal: its context, a client, cached portal reads, planned writes."""

    def __init__(self, services, session, portal_id: int, now: dt.datetime, client=None):
        self.services = services
        self.session = session
        self.portal_id = portal_id
        self.now = naive_utc(now)  # naive UTC, as stored
        self.ctx: PortalContext = load_context(session, portal_id)
        self.local_now = self.ctx.local(self.now)
        self._client = client
        self._items: dict[tuple[str, int], dict | None] = {}
        self._errors: dict[tuple[str, int], Exception] = {}
        self._users: dict[int, dict] | None = None
        self._org = None
        self._fields: dict[str, dict] = {}
        self._stages: dict[str, list[dict]] = {}

    @property
    def client(self):
        if self._client is None:
            from addon.bitrix.client import portal_client

            self._client = portal_client(self.services, self.portal_id)
            self._own_client = True
        return self._client

    def close(self) -> None:
        if getattr(self, "_own_client", False):
            self._client.close()

    @property
    def language(self) -> str:
        return self.ctx.language or "ru"

    def t(self, key: str, **values) -> str:
        return text(self.language, key, **values)

    # -- planned writes ---------------------------------------------------------------------------
    def plan(self, key: str, method: str, params: dict) -> None:
        row = plan_write(self.session, self.portal_id, f"robot:{key}", method, params)
        if row is not None:
            row.status = ROBOT_PENDING

    def notify(self, key: str, user_id: int | None, message: str) -> None:
        if user_id:
            # Every part of a long message is claimed for the robot pass (engine.message_parts).
            plan_message(self.session, self.portal_id, f"robot:{key}:{user_id}", int(user_id),
                         self.local_now.date(), NOTIFY_KIND, message, status=ROBOT_PENDING)

    def reply(self, key: str, event_token: str, return_values: dict[str, Any] | None, log_message: str) -> None:
        if event_token:
            self.plan(f"{key}:reply", "bizproc.event.send",
                      {"event_token": event_token, "return_values": return_values or {}, "log_message": log_message})

    def update_item(self, key: str, document_type: str, entity_id: int, fields: dict) -> None:
        self.plan(key, f"crm.{document_type}.update", {"id": entity_id, "fields": fields,
                                                       "params": {"REGISTER_SONET_EVENT": "Y"}})
        cached = self._items.get((document_type, entity_id))
        if cached is not None:
            cached.update(fields)

    def task(self, key: str, responsible: int | None, title: str, description: str, bindings: list[str],
             deadline: dt.datetime | None = None) -> None:
        if not responsible:
            return
        fields: dict[str, Any] = {"TITLE": title, "DESCRIPTION": description, "RESPONSIBLE_ID": int(responsible),
                                  "UF_CRM_TASK": bindings}
        if deadline is not None:
            fields["DEADLINE"] = deadline.isoformat()
        self.plan(key, "tasks.task.add", {"fields": fields})

    # -- reads ------------------------------------------------------------------------------------
    def prefetch(self, documents: Iterable[tuple[str, int]]) -> None:
        wanted: dict[str, list[int]] = {}
        for document_type, entity_id in documents:
            if (document_type, entity_id) not in self._items:
                wanted.setdefault(document_type, []).append(entity_id)
        for document_type, ids in wanted.items():
            for entity_id, item in self.client.get_many(f"crm.{document_type}.get", ids).items():
                if isinstance(item, dict):
                    self._items[(document_type, entity_id)] = item
                elif is_permanent(item):  # deleted (or no longer ours to see): the item is gone
                    self._items[(document_type, entity_id)] = None
                else:  # a struggling portal says nothing about the item: ask again next pass
                    self._errors[(document_type, entity_id)] = item

    def item(self, document_type: str, entity_id: int) -> dict | None:
        """The item as the portal has it, None if it is gone; raises the portal's error if unknown."""
        key = (document_type, entity_id)
        if key not in self._items and key not in self._errors:
            self.prefetch([key])
        if key in self._errors:
            raise self._errors.pop(key)
        return self._items.get(key)

    def forget(self, document_type: str, entity_id: int) -> None:
        self._items.pop((document_type, entity_id), None)

    def users(self) -> dict[int, dict]:
        """Active users of the portal (deactivated ones are simply not here)."""
        if self._users is None:
            self._users = directory.active_users(self.client)
        return self._users

    def user_name(self, user_id: int | None) -> str:
        row = self.users().get(int(user_id)) if user_id else None
        return directory.full_name(row, user_id) if user_id else "—"

    def org(self):
        if self._org is None:
            self._org = directory.org(self.client, list(self.users().values()))
        return self._org

    def supervisor(self, user_id: int | None) -> int | None:
        from addon.rules import find_supervisor

        try:
            org = self.org()
        except PortalError as exc:
            if not reads_as_empty(exc):
                raise  # the rate limit, a 5xx, the network: the robot call is tried again later
            log.warning("no supervisor lookup on portal %s: %s", self.portal_id, exc)
            return None
        return find_supervisor(org, user_id)

    def field_labels(self, document_type: str, field_code: str) -> dict[str, str]:
        """Enumeration item ID -> label of a field (from crm.<type>.fields)."""
        if document_type not in self._fields:
            try:
                self._fields[document_type] = self.client.call(f"crm.{document_type}.fields") or {}
            except PortalError as exc:
                if not reads_as_empty(exc):
                    raise
                self._fields[document_type] = {}
        spec = self._fields[document_type].get(field_code) or self._fields[document_type].get(field_code.upper()) or {}
        return {str(i.get("ID")): str(i.get("VALUE")) for i in spec.get("items") or [] if isinstance(i, dict)}

    def stages(self, document_type: str, item: dict) -> list[dict]:
        """The item's pipeline stages in order (crm.status.list)."""
        if document_type == "lead":
            entity = "STATUS"
        else:
            category = as_int(item.get("CATEGORY_ID")) or 0
            entity = "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
        if entity not in self._stages:
            try:
                rows = self.client.call("crm.status.list", {"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}})
            except PortalError as exc:
                if not reads_as_empty(exc):
                    raise
                rows = []
            self._stages[entity] = sorted(rows or [], key=lambda r: as_int(r.get("SORT")) or 0)
        return self._stages[entity]

    def first_stage(self, document_type: str, item: dict) -> str | None:
        rows = self.stages(document_type, item)
        return str(rows[0]["STATUS_ID"]) if rows else None

    def stage_history(self, document_type: str, entity_id: int) -> list[str]:
        """The stages the item entered, newest first (crm.stagehistory.list); empty if unknown."""
        try:
            result = self.client.call("crm.stagehistory.list", {
                "entityTypeId": OWNER_TYPE[document_type], "order": {"ID": "DESC"},
                "filter": {"OWNER_ID": int(entity_id)}})
        except PortalError as exc:  # an older portal without the method: callers fall back
            if not reads_as_empty(exc):
                raise
            return []
        rows = result.get("items", []) if isinstance(result, dict) else result or []
        return [str(r.get("STAGE_ID") or r.get("STATUS_ID") or "") for r in rows if isinstance(r, dict)]

    def previous_stage(self, document_type: str, item: dict, explicit: str = "") -> str | None:
        """Where to send an item back: the robot's setting, else the stage it came from (stage
        history), else the in-progress stage before the current one in the pipeline."""
        if explicit:
            return explicit
        current = str(item.get(STAGE_FIELD[document_type]) or "")
        for stage in self.stage_history(document_type, int(item["ID"])):
            if stage and stage != current:
                return stage
        rows = self.stages(document_type, item)
        codes = [str(r["STATUS_ID"]) for r in rows]
        if current not in codes:
            return None
        before = [r for r in rows[:codes.index(current)] if (r.get("SEMANTICS") or "P") in ("P", "", None)]
        return str(before[-1]["STATUS_ID"]) if before else None

    def title(self, document_type: str, entity_id: int, item: dict | None) -> str:
        return item_link(document_type, entity_id, (item or {}).get("TITLE"))


def is_closed(document_type: str, item: dict) -> bool:
    if document_type == "deal" and str(item.get("CLOSED") or "N") == "Y":
        return True
    return str(item.get(SEMANTIC_FIELD[document_type]) or "P") in ("S", "F")


# --- distribution ----------------------------------------------------------------------------------

def pool_of(run: Run, props: dict) -> list[int]:
    """The pool: the listed users, then the members of the listed departments (by ID)."""
    pool = prop_users(props.get("users"))
    departments = {int(d) for d in prop_list(props.get("departments")) if d.isdigit()}
    if departments:
        for user_id, row in sorted(run.users().items()):
            if departments & {int(d) for d in (row.get("UF_DEPARTMENT") or [])}:
                pool.append(user_id)
    return list(dict.fromkeys(pool))


def open_loads(run: Run, document_type: str, users: list[int]) -> dict[int, int]:
    """Each user's open items of this type: one batch of counting list calls."""
    flt = {"CLOSED": "N"} if document_type == "deal" else {"STATUS_SEMANTIC_ID": "P"}
    commands = {str(u): (f"crm.{document_type}.list", {"filter": {**flt, "ASSIGNED_BY_ID": u}, "select": ["ID"]})
                for u in users}
    answer = run.client.batch(commands)
    loads = {}
    for u in users:
        total = answer.total.get(str(u))
        if total is None:
            rows = answer.results.get(str(u)) or []
            total = len(rows)
        loads[u] = int(total)
    return loads


def choose_manager(run: Run, document_type: str, props: dict, exclude: Iterable[int] = ()) -> int | None:
    """Pick the next manager of the pool and move the pool's cursor (row-locked, so two workers never
    hand out the same turn)."""
    mode = prop_str(props.get("mode")) or "round_robin"
    if mode not in logic.MODES:
        mode = "round_robin"
    # Portal reads first: the pool's row lock (and, on SQLite, the write lock) is held only briefly.
    pool = pool_of(run, props)
    absent = set(prop_users(props.get("absent"))) | absent_users(run.session, run.portal_id)
    active = set(run.users())
    candidates = logic.eligible_managers(pool, active, absent, exclude)
    loads = open_loads(run, document_type, candidates) if mode == "least_loaded" and candidates else None
    weights = None
    if mode == "ranking":
        month = f"{run.local_now.year:04d}-{run.local_now.month:02d}"
        weights = ranking_weights_for(run.session, run.portal_id, month, run.ctx.tz, document_type)
    name = prop_str(props.get("pool")) or "default"
    key = f"pool:{document_type}:{name}"[:128]
    state = logic.PoolState.from_dict(get_state(run.session, run.portal_id, key, lock=True))
    chosen, new_state = logic.distribute(mode, pool, active, state, absent=absent, exclude=exclude,
                                         loads=loads, weights=weights)
    if chosen is not None:
        put_state(run.session, run.portal_id, key, new_state.to_dict())
    return chosen


def handle_distribute(run: Run, call: RobotCall, item: dict) -> None:
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


# --- take in work within N minutes -------------------------------------------------------------------

SLA_PROPS = ("mode", "users", "departments", "absent", "pool")


def handle_take_in_work(run: Run, call: RobotCall, item: dict) -> None:
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


def fire_take_in_work(run: Run, timer: RobotTimer) -> None:
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


# --- one client per phone ----------------------------------------------------------------------------

def _document_phones(run: Run, call: RobotCall, item: dict) -> tuple[list[str], set[tuple[str, int]]]:
    """The item's normalised phones and the CRM records that are the item itself (never its duplicate)."""
    own: set[tuple[str, int]] = {(call.document_type.upper(), call.entity_id)}
    raw = multifield_phones(item)
    for kind in ("contact", "company"):
        linked = as_int(item.get(f"{kind.upper()}_ID"))
        if linked:
            own.add((kind.upper(), linked))
            if call.document_type == "deal":
                other = run.client.call(f"crm.{kind}.get", {"id": linked}) or {}
                raw.extend(multifield_phones(other))
    portal = run.session.get(Portal, run.portal_id)
    region = phone_region_for(portal.language if portal else run.language)
    return normalize_phones(raw, region), own


def handle_one_client_per_phone(run: Run, call: RobotCall, item: dict) -> None:
    key = f"call:{call.event_id}"
    title = run.title(call.document_type, call.entity_id, item)
    responsible = as_int(item.get("ASSIGNED_BY_ID"))
    binding = [f"{TASK_PREFIX[call.document_type]}_{call.entity_id}"]
    phones, own = _document_phones(run, call, item)
    if not phones:
        run.task(f"{key}:no_phone", responsible, run.t("no_phone_title"), run.t("no_phone_body", item=title), binding)
        run.reply(key, call.event_token, {"duplicate_id": 0, "duplicate_type": "", "outcome": "no_phone"},
                  "no phone")
        return
    # Bitrix24 matches numbers by their digits; send both the E.164 and the national form.
    values = list(dict.fromkeys(phones + [p.lstrip("+") for p in phones]))[:20]
    # One call per entity_type (crm-duplicate-findbycomm.md): without it, 20 or more hits of one
    # type hide the others; the method knows LEAD, CONTACT and COMPANY, never DEAL.
    kinds = ("CONTACT", "COMPANY", "LEAD")
    answer = run.client.batch({kind: ("crm.duplicate.findbycomm", {"entity_type": kind, "type": "PHONE",
                                                                    "values": values}) for kind in kinds})
    if answer.errors:
        raise next(iter(answer.errors.values()))  # a struggling portal: the robot call is tried again
    known: tuple[str, int] | None = None
    for kind in kinds:
        found = answer.results.get(kind)
        ids = sorted(int(i) for i in (found.get(kind) or [] if isinstance(found, dict) else [])
                     if (kind, int(i)) not in own)
        if ids:
            known = (kind, ids[0])  # the oldest record is the client
            break
    if known is None:
        run.reply(key, call.event_token, {"duplicate_id": 0, "duplicate_type": "", "outcome": "new"}, "new client")
        return
    kind, known_id = known
    known_item = run.client.call(f"crm.{kind.lower()}.get", {"id": known_id}) or {}
    owner = as_int(known_item.get("ASSIGNED_BY_ID"))
    branch = logic.repeat_request_branch(owner, run.users())
    known_title = item_link(kind.lower(), known_id, known_item.get("TITLE") or " ".join(
        p for p in (known_item.get("NAME"), known_item.get("LAST_NAME")) if p) or None)
    returns = {"duplicate_id": known_id, "duplicate_type": kind.lower(), "outcome": branch}
    if branch == "owner":
        # The known client's manager gets the request; the item stays in its stage.
        if owner != responsible:
            run.update_item(f"{key}:owner", call.document_type, call.entity_id, {"ASSIGNED_BY_ID": owner})
        run.task(f"{key}:repeat", owner, run.t("repeat_title"),
                 run.t("repeat_body", known=known_title, phone=phones[0], item=title),
                 binding + [f"{TASK_PREFIX[kind.lower()]}_{known_id}"])
        run.reply(key, call.event_token, returns, f"repeat request: task to {run.user_name(owner)}")
        return
    ignore = set(prop_list(call.properties.get("ignore_stages")))
    stage = str(item.get(STAGE_FIELD[call.document_type]) or "")
    known_stage = str(known_item.get("STATUS_ID") or known_item.get("STAGE_ID") or "")
    first = prop_str(call.properties.get("first_stage")) or run.first_stage(call.document_type, item)
    # Seed 000: a client closed as "not a client" (junk) is not brought back by a repeat request.
    if stage in ignore or known_stage in ignore or not first:
        run.reply(key, call.event_token, {**returns, "outcome": "kept"}, "repeat request: the stage is kept")
        return
    # Nobody active owns the client: back to the first stage, open to everyone, for others to take.
    run.update_item(f"{key}:return", call.document_type, call.entity_id,
                    {STAGE_FIELD[call.document_type]: first, "OPENED": "Y"})
    run.reply(key, call.event_token, returns, f"repeat request: back to {first}")


# --- required fields, close reasons, stage gate --------------------------------------------------------

def handle_required_fields(run: Run, call: RobotCall, item: dict) -> None:
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


def handle_close_reason(run: Run, call: RobotCall, item: dict) -> None:
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


def handle_ranking_stage(run: Run, call: RobotCall, item: dict) -> None:
    stage = str(item.get(STAGE_FIELD[call.document_type]) or "")
    if not has_record(run.session, run.portal_id, "reached", call.document_id):
        add_record(run.session, run.portal_id, "reached", call.document_id, run.now,
                   as_int(item.get("ASSIGNED_BY_ID")), stage)
    share = prop_float(call.properties.get("share"), 0.5)
    put_state(run.session, run.portal_id, f"ranking_config:{call.document_type}", {"share": share, "stage": stage})


def handle_stage_gate(run: Run, call: RobotCall, item: dict) -> None:
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


# --- call-attempt cadence ----------------------------------------------------------------------------

def handle_call_cadence(run: Run, call: RobotCall, item: dict) -> None:
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


def fire_call_cadence(run: Run, timer: RobotTimer) -> None:
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


# --- reminder before an appointment ------------------------------------------------------------------

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


def handle_appointment_reminder(run: Run, call: RobotCall, item: dict) -> None:
    date_field = prop_str(call.properties.get("date_field"))
    state = {"document_type": call.document_type, "entity_id": call.entity_id, "date_field": date_field,
             "days_before": max(prop_int(call.properties.get("days_before"), 1), 0),
             "title": prop_str(call.properties.get("title")) or run.t("reminder_title"), "reminded_for": None}
    timer = upsert_timer(run.session, run.portal_id, "appointment_reminder",
                         f"reminder:{call.document_id}:{date_field}"[:255], call.document_id, run.now, state)
    run.session.flush()
    _plan_reminder(run, timer, item)


def fire_appointment_reminder(run: Run, timer: RobotTimer) -> None:
    item = run.item(timer.state["document_type"], int(timer.state["entity_id"]))
    if item is None or is_closed(timer.state["document_type"], item):
        timer.status = "cancelled"
        return
    _plan_reminder(run, timer, item)


# --- stuck in a stage --------------------------------------------------------------------------------

def handle_stuck_in_stage(run: Run, call: RobotCall, item: dict) -> None:
    hours = max(prop_int(call.properties.get("hours"), 24), 1)
    stage = str(item.get(STAGE_FIELD[call.document_type]) or "")
    cancel_timers(run.session, run.portal_id, call.document_id, "stuck_in_stage")
    upsert_timer(run.session, run.portal_id, "stuck_in_stage", f"stuck:{call.event_id}", call.document_id,
                 run.now + dt.timedelta(hours=hours),
                 {"document_type": call.document_type, "entity_id": call.entity_id, "stage": stage,
                  "entered_at": run.now.isoformat(), "hours": hours})


def fire_stuck_in_stage(run: Run, timer: RobotTimer) -> None:
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
    upsert_stuck_digest(run, day, digest_at)


def upsert_stuck_digest(run: Run, day: str, due: dt.datetime) -> None:
    key = f"stuck_digest:{day}"
    exists = run.session.scalar(select(RobotTimer.id).where(RobotTimer.portal_id == run.portal_id,
                                                            RobotTimer.key == key))
    if exists is None:
        upsert_timer(run.session, run.portal_id, "stuck_digest", key, "PORTAL", due, {"day": day})


def fire_stuck_digest(run: Run, timer: RobotTimer) -> None:
    from addon.models import RobotRecord

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


# --- sending what was planned --------------------------------------------------------------------------

def _has_unsent(session, portal_id: int) -> bool:
    return any(session.scalar(select(model.id).where(model.portal_id == portal_id, model.status == ROBOT_PENDING)
                              .limit(1)) is not None for model in (Outbox, NotificationLog))


def send_robot_writes(services, client, portal_id: int) -> int:
    """Send the portal's planned robot writes (replies included), then its robot messages, 50 a
    batch; each row is claimed while its batch is in flight and marked as soon as it is answered."""
    sent = 0
    for model, command in ((Outbox, lambda r: (r.method, r.params)), (NotificationLog, notification_command)):
        while True:
            with services.sessions() as session:
                query = select(model).where(model.portal_id == portal_id, model.status == ROBOT_PENDING) \
                    .order_by(model.id).limit(SEND_CHUNK)
                if not services.settings.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                rows = session.scalars(query).all()
                if not rows:
                    break
                answer = client.batch({str(r.id): command(r) for r in rows})
                done, transient = mark_answers(rows, answer, max_attempts=services.settings.send_attempts)
                sent += done
                session.commit()
            if transient:  # the portal is struggling: the rest waits for the next pass
                return sent
    return sent


# --- the two entry points ----------------------------------------------------------------------------

HANDLERS: dict[str, Callable[[Run, RobotCall, dict], None]] = {
    "distribute": handle_distribute,
    "take_in_work": handle_take_in_work,
    "one_client_per_phone": handle_one_client_per_phone,
    "required_fields": handle_required_fields,
    "close_reason": handle_close_reason,
    "call_cadence": handle_call_cadence,
    "appointment_reminder": handle_appointment_reminder,
    "ranking_stage": handle_ranking_stage,
    "stage_gate": handle_stage_gate,
    "stuck_in_stage": handle_stuck_in_stage,
}
TIMER_HANDLERS: dict[str, Callable[[Run, RobotTimer], None]] = {
    "take_in_work": fire_take_in_work,
    "call_cadence": fire_call_cadence,
    "appointment_reminder": fire_appointment_reminder,
    "stuck_in_stage": fire_stuck_in_stage,
    "stuck_digest": fire_stuck_digest,
}


def process_robot_calls(services, portal_id: int, now: dt.datetime, limit: int = 200, client=None) -> int:
    """Execute the portal's stored robot calls (oldest first); returns how many were completed.

    A call whose item is gone is answered and marked; a call that fails keeps its error and is
    tried again next time: while the portal refuses for a passing reason, for as long as that
    lasts; a failure of its own, up to MAX_ATTEMPTS times."""
    now = naive_utc(now)
    done = 0
    with services.sessions() as session:
        events = session.scalars(select(StoredEvent).where(
            StoredEvent.portal_id == portal_id, StoredEvent.source == "robot", StoredEvent.processed_at.is_(None),
            StoredEvent.attempts < MAX_ATTEMPTS).order_by(StoredEvent.id).limit(limit)).all()
        if not events:
            if _has_unsent(session, portal_id):  # left over from a pass the portal cut short
                run = Run(services, session, portal_id, now, client)
                try:
                    send_robot_writes(services, run.client, portal_id)
                finally:
                    run.close()
            return 0
        run = Run(services, session, portal_id, now, client)
        try:
            calls: dict[int, RobotCall | Exception] = {}
            for event in events:
                try:
                    calls[event.id] = parse_call(event)
                except (ValueError, KeyError, TypeError) as exc:
                    calls[event.id] = exc
            event_ids = [e.id for e in events]
            try:
                run.prefetch((c.document_type, c.entity_id) for c in calls.values() if isinstance(c, RobotCall))
            except Exception as exc:  # the portal is unreachable: nothing is decided, try again later
                _fail(session, event_ids, exc)
                session.commit()
                raise
            session.commit()
            for event_id in event_ids:
                # Claim the call: on PostgreSQL a second worker skips a call this one is executing.
                query = select(StoredEvent).where(StoredEvent.id == event_id, StoredEvent.processed_at.is_(None)) \
                    .execution_options(populate_existing=True)
                if not services.settings.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                event = session.scalar(query)
                if event is None:
                    session.rollback()
                    continue
                call = calls[event_id]
                try:
                    if isinstance(call, Exception):
                        raise call
                    item = run.item(call.document_type, call.entity_id)
                    if item is None:
                        run.reply(f"call:{call.event_id}", call.event_token, {}, "the item no longer exists")
                    else:
                        HANDLERS[call.robot](run, call, item)
                    event.processed_at = utcnow()
                    event.error = None
                    session.commit()
                    done += 1
                except (ValueError, KeyError, TypeError) as exc:  # a malformed call never gets better
                    session.rollback()
                    event = session.get(StoredEvent, event_id)
                    event.processed_at, event.error, event.attempts = utcnow(), f"refused: {exc}"[:2000], event.attempts + 1
                    token = (event.payload or {}).get("event_token")
                    if isinstance(token, str) and token:  # let the workflow go on instead of waiting for us
                        run.reply(f"call:{event_id}", token, {}, f"Nezabyt refused this call: {exc}"[:500])
                    session.commit()
                except Exception as exc:
                    session.rollback()
                    _fail(session, [event_id], exc)
                    session.commit()
                    log.warning("robot call %s failed: %s", event_id, exc)
            send_robot_writes(services, run.client, portal_id)
        finally:
            run.close()
    return done


def _fail(session, event_ids: list[int], exc: Exception) -> None:
    """Note why the calls wait. A passing refusal (the rate limit, a 5xx, a blocked or unpaid
    portal) spends none of a call's attempts: it waits for the portal, however long that takes;
    only a failure of our own or of the call counts towards MAX_ATTEMPTS."""
    spend = not (isinstance(exc, PortalError) and is_temporary(exc))
    for event_id in event_ids:
        event = session.get(StoredEvent, event_id)
        event.attempts += int(spend)
        event.error = f"{type(exc).__name__}: {exc}"[:2000]


def _fire_portal_timers(services, session, run: Run, timer_ids: list[int], now: dt.datetime) -> int:
    from addon.bitrix.client import PortalError

    portal = session.get(Portal, run.portal_id)
    if portal is None or portal.status != PORTAL_ACTIVE:
        # The app is gone from this portal (or waits for re-authorisation): nothing can be done there.
        if portal is None or portal.status == PORTAL_UNINSTALLED:
            for timer in session.scalars(select(RobotTimer).where(RobotTimer.id.in_(timer_ids))):
                timer.status = "cancelled"
            session.commit()
        return 0
    timers = session.scalars(select(RobotTimer).where(RobotTimer.id.in_(timer_ids))).all()
    try:
        run.prefetch((t.state["document_type"], int(t.state["entity_id"])) for t in timers
                     if "document_type" in (t.state or {}))
    except Exception as exc:  # the portal is unreachable: every timer waits for the next pass
        log.warning("robot timers of portal %s wait: %s", run.portal_id, exc)
        return 0
    session.commit()
    fired = 0
    for timer_id in timer_ids:
        query = select(RobotTimer).where(RobotTimer.id == timer_id).execution_options(populate_existing=True)
        if not services.settings.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        timer = session.scalar(query)
        if timer is None or timer.status != "waiting" or timer.due_at > now:
            session.rollback()
            continue
        try:
            TIMER_HANDLERS[timer.robot](run, timer)
            timer.fired_at = now
            session.commit()
            fired += 1
        except PortalError as exc:  # the portal is struggling: try again next pass
            session.rollback()
            log.warning("robot timer %s waits: %s", timer_id, exc)
        except Exception as exc:  # a timer that cannot be fired gives up after a few tries
            session.rollback()
            timer = session.get(RobotTimer, timer_id)
            state = dict(timer.state or {})
            state["failures"] = int(state.get("failures", 0)) + 1
            state["error"] = f"{type(exc).__name__}: {exc}"[:500]
            timer.state = state
            if state["failures"] >= MAX_ATTEMPTS:
                timer.status = "failed"
            session.commit()
            log.warning("robot timer %s failed: %s", timer_id, exc)
    send_robot_writes(services, run.client, run.portal_id)
    return fired


def fire_due_timers(services, now: dt.datetime, portal_id: int | None = None, limit: int = 500,
                    client=None) -> int:
    """Fire every robot timer due at `now` (all portals, or one); returns how many fired.

    On PostgreSQL each timer is claimed with FOR UPDATE SKIP LOCKED, so several workers never fire
    the same timer; its decision, planned writes and next due time commit together."""
    now = naive_utc(now)
    fired = 0
    with services.sessions() as session:
        query = select(RobotTimer.id, RobotTimer.portal_id).where(
            RobotTimer.status == "waiting", RobotTimer.due_at <= now).order_by(RobotTimer.due_at).limit(limit)
        if portal_id is not None:
            query = query.where(RobotTimer.portal_id == portal_id)
        due: dict[int, list[int]] = {}
        for timer_id, pid in session.execute(query):
            due.setdefault(pid, []).append(timer_id)
    for pid, timer_ids in due.items():
        with services.sessions() as session:
            run = Run(services, session, pid, now, client)
            try:
                fired += _fire_portal_timers(services, session, run, timer_ids, now)
            finally:
                run.close()
    return fired


# --- the `nezabyt robots` commands -------------------------------------------------------------------

def _services():
    from addon.services import services_scope

    return services_scope()


def _portal_option(session, portal: str) -> Portal:
    from addon.engine import find_portal

    row = find_portal(session, portal)
    if row is None:
        raise click.ClickException(f"no portal {portal!r}")
    return row


@click.group("robots")
def robots_command() -> None:
    """Pipeline robots: absences, the monthly ranking, close reasons, running them by hand."""


@robots_command.command("absent")
@click.option("--portal", required=True, help="member_id or domain")
@click.option("--user", "user_id", type=int, required=True)
@click.option("--back", is_flag=True, help="the manager is back")
def absent_command(portal: str, user_id: int, back: bool) -> None:
    """Mark a manager absent (or back): the distribution skips them, with no backlog on return."""
    from addon.db import unit_of_work
    from addon.robots.store import absent_users, mark_absent

    with _services() as services:
        with unit_of_work(services.sessions) as session:
            row = _portal_option(session, portal)
            mark_absent(session, row.id, user_id, absent=not back)
            now_absent = sorted(absent_users(session, row.id))
        click.echo(f"absent on {row.domain}: {', '.join(map(str, now_absent)) or 'nobody'}")


@robots_command.command("ranking")
@click.option("--portal", required=True, help="member_id or domain")
@click.option("--month", required=True, help="YYYY-MM")
@click.option("--type", "document_type", type=click.Choice(["lead", "deal"]), default=None)
def ranking_command(portal: str, month: str, document_type: str | None) -> None:
    """The month's ranking: each manager's new items and their conversion into the ranking stage."""
    from addon.robots.store import ranking_report

    with _services() as services:
        with services.sessions() as session:
            row = _portal_option(session, portal)
            tz = load_context(session, row.id).tz
            for rank in ranking_report(session, row.id, month, tz, document_type):
                click.echo(f"user {rank.user_id}: {rank.converted}/{rank.new_items} = {rank.conversion:.0%}")


@robots_command.command("reasons")
@click.option("--portal", required=True, help="member_id or domain")
def reasons_command(portal: str) -> None:
    """How often each close reason was given."""
    from addon.robots.store import close_reason_counts

    with _services() as services:
        with services.sessions() as session:
            row = _portal_option(session, portal)
            for reason, count in close_reason_counts(session, row.id).items():
                click.echo(f"{count}\t{reason}")


@robots_command.command("run")
@click.option("--now", "now_text", default=None, help="ISO time (default: now)")
def run_command(now_text: str | None) -> None:
    """Execute stored robot calls of every portal and fire due timers once."""
    with _services() as services:
        now = dt.datetime.fromisoformat(now_text) if now_text else dt.datetime.now(dt.timezone.utc)
        with services.sessions() as session:
            portal_ids = list(session.scalars(select(Portal.id).where(Portal.status == PORTAL_ACTIVE)))
        calls = sum(process_robot_calls(services, pid, now) for pid in portal_ids)
        timers = fire_due_timers(services, now)
        click.echo(f"robot calls: {calls}, timers fired: {timers}")
