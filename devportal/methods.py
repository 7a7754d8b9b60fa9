"""REST methods of the devportal, each with the semantics and answer shape of Bitrix24."""
from __future__ import annotations

import copy
import json
import re
import secrets
from urllib.parse import urlsplit

from devportal import crm
from devportal.answers import Listing
from devportal.errors import RestError, access_denied, argument_error, legacy_crm_error
from devportal.phpquery import as_list

METHODS: dict = {}


def method(*names):
    def register(fn):
        for name in names:
            METHODS[name.lower()] = fn
        return fn
    return register


def arg(params: dict, name: str, default=None):
    """Top-level keys are case-insensitive in Bitrix24."""
    if name in params:
        return params[name]
    lower = name.lower()
    for key, value in params.items():
        if str(key).lower() == lower:
            return value
    return default


def _dict(value) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return {}


def _select(value) -> list[str]:
    return [str(v).upper() for v in as_list(value)]


def _require_admin(portal, ctx) -> None:
    if not portal.is_admin(ctx.user_id):
        raise access_denied("Access denied! Administrator access required")


def _check_handler(url) -> None:
    parts = urlsplit(str(url or ""))
    if parts.scheme not in ("http", "https"):
        raise RestError("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported event handler protocol", 400)
    if "." not in (parts.hostname or ""):
        raise RestError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL", 400)


# ---------------------------------------------------------------------- app, server, users
@method("app.info")
def app_info(portal, ctx, params):
    app = portal.app
    # The documented answer (api-reference/common/system/app-info.md): a numeric ID, and no client id
    # (the authorization server's app.info names that: DevPortal.app_info_for_token).
    return {"ID": int(app["id"]), "CODE": app["code"], "VERSION": app["version"], "STATUS": "L",
            "INSTALLED": bool(app["installed"]), "PAYMENT_EXPIRED": "N", "DAYS": None, "LANGUAGE_ID": "ru",
            **_license_fields(portal.license)}


def _license_fields(license: str) -> dict:
    """LICENSE is "<region>_<plan>"; LICENSE_TYPE the plan; LICENSE_FAMILY the plan without its size
    (ent250 -> ent), as in the docs' example ("de_ent10000", "ent10000", "ent")."""
    plan = license.split("_", 1)[-1]
    return {"LICENSE": license, "LICENSE_TYPE": plan, "LICENSE_FAMILY": plan.rstrip("0123456789") or plan}


@method("server.time")
def server_time(portal, ctx, params):
    return portal.iso()


@method("scope")
def scope(portal, ctx, params):
    return portal.app["scope"].split(",")


@method("methods")
def methods_list(portal, ctx, params):
    return sorted(METHODS)


@method("app.option.set")
def app_option_set(portal, ctx, params):
    _require_admin(portal, ctx)
    options = _dict(arg(params, "options"))
    if not options:
        raise argument_error("Wrong arguments", "options")
    portal.options.update(options)
    return True


@method("app.option.get")
def app_option_get(portal, ctx, params):
    option = arg(params, "option")
    if option is not None:
        return portal.options.get(option)
    return portal.options if portal.options else []


@method("user.option.set")
def user_option_set(portal, ctx, params):
    options = _dict(arg(params, "options"))
    portal.user_options.setdefault(ctx.user_id, {}).update(options)
    return True


@method("user.option.get")
def user_option_get(portal, ctx, params):
    mine = portal.user_options.get(ctx.user_id, {})
    option = arg(params, "option")
    if option is not None:
        return mine.get(option)
    return mine if mine else []


def _public_user(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


@method("profile")
def profile(portal, ctx, params):
    user = portal.users[ctx.user_id]
    return {"ID": user["ID"], "ADMIN": user["_ADMIN"], "NAME": user["NAME"], "LAST_NAME": user["LAST_NAME"],
            "PERSONAL_GENDER": "", "PERSONAL_PHOTO": "", "TIME_ZONE": user.get("TIME_ZONE") or "",
            "TIME_ZONE_OFFSET": 0}


@method("user.current")
def user_current(portal, ctx, params):
    return _public_user(portal.users[ctx.user_id])


@method("user.admin")
def user_admin(portal, ctx, params):
    return portal.is_admin(ctx.user_id)


@method("user.get", "user.search")
def user_get(portal, ctx, params):
    flt = dict(_dict(arg(params, "filter")) or _dict(arg(params, "FILTER")))
    for key, value in params.items():  # top-level filter keys are allowed too
        if key.upper() not in ("FILTER", "SORT", "ORDER", "START", "ADMIN_MODE", "AUTH") and \
                not isinstance(value, dict):
            flt[key] = value
    rows = []
    for user in portal.users.values():
        if _user_matches(user, flt):
            rows.append(_public_user(user))
    sort = str(arg(params, "sort") or "ID").upper()
    desc = str(arg(params, "order") or "ASC").upper() == "DESC"
    rows.sort(key=lambda r: (int(r["ID"]) if sort == "ID" else str(r.get(sort) or "")), reverse=desc)
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing(page, total, nxt)


def _user_matches(user: dict, flt: dict) -> bool:
    for raw_key, value in flt.items():
        op, key = crm.split_filter_key(str(raw_key))
        key = key.upper()
        if key == "ACTIVE":
            wanted = str(value).lower() in ("true", "1", "y")
            if user["ACTIVE"] != wanted:
                return False
        elif key == "UF_DEPARTMENT":
            wanted = {int(v) for v in as_list(value)}
            if not wanted & set(user["UF_DEPARTMENT"]):
                return False
        elif key == "USER_TYPE":
            if value != user["USER_TYPE"]:
                return False
        elif key in ("NAME_SEARCH", "FIND"):
            hay = f"{user['NAME']} {user['LAST_NAME']} {user['EMAIL']}".lower()
            if str(value).lower() not in hay:
                return False
        elif key == "ID":
            ids = {str(v) for v in as_list(value)}
            if user["ID"] not in ids:
                return False
        elif key in user:
            actual = str(user[key] or "").lower()
            if op == "%" and str(value).lower() not in actual:
                return False
            if op != "%" and actual != str(value).lower():
                return False
    return True


@method("department.get")
def department_get(portal, ctx, params):
    rows = []
    for dep in portal.departments.values():
        ok = True
        for key in ("ID", "NAME", "PARENT", "UF_HEAD"):
            value = arg(params, key)
            if value is not None and str(dep.get(key) or "") != str(value):
                ok = False
        if ok:
            rows.append({k: v for k, v in dep.items() if v is not None})
    sort = str(arg(params, "sort") or "ID").upper()
    rows.sort(key=lambda r: int(r["ID"]) if sort == "ID" else str(r.get(sort) or ""),
              reverse=str(arg(params, "order") or "ASC").upper() == "DESC")
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing(page, total, nxt)


# ---------------------------------------------------------------------- events
KNOWN_EVENTS = {"ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPUPDATE", "ONVOXIMPLANTCALLEND", "ONUSERADD",
                "ONCRMACTIVITYADD", "ONCRMACTIVITYUPDATE", "ONCRMACTIVITYDELETE"} | {
    f"ONCRM{e}{a}" for e in ("CONTACT", "COMPANY", "DEAL", "LEAD") for a in ("ADD", "UPDATE", "DELETE")}


def _event_scope_granted(portal, event: str) -> bool:
    """An event whose scope the app was not granted does not exist for it."""
    granted = portal.app["scope"].split(",")
    if event.startswith("ONCRM"):
        return "crm" in granted
    if event.startswith("ONVOXIMPLANT"):
        return "telephony" in granted
    if event == "ONUSERADD":
        return "user" in granted
    return True


@method("event.bind")
def event_bind(portal, ctx, params):
    event = str(arg(params, "event") or "").upper()
    offline = str(arg(params, "event_type") or "online").lower() == "offline"
    if event not in KNOWN_EVENTS or not _event_scope_granted(portal, event):
        raise RestError("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
    handler = arg(params, "handler")
    if offline:
        _require_admin(portal, ctx)
        handler = ""
    else:
        _check_handler(handler)
    auth_type = str(arg(params, "auth_type") or "0")
    if auth_type != "0" and auth_type != str(ctx.user_id):
        _require_admin(portal, ctx)
    for existing in portal.bound_events:
        if existing["event"] == event and existing["handler"] == handler and \
                existing["auth_type"] == auth_type and existing["offline"] == offline:
            raise RestError("ERROR_CORE", "Unable to set event handler: Handler already binded", 400)
    portal._handler_id += 1
    portal.bound_events.append({"ID": str(portal._handler_id), "event": event, "handler": handler,
                                "auth_type": auth_type, "offline": offline,
                                "connector_id": str(arg(params, "auth_connector") or "")})
    return True


@method("event.get")
def event_get(portal, ctx, params):
    rows = []
    for h in portal.bound_events:
        row = {"event": h["event"], "handler": h["handler"], "auth_type": h["auth_type"],
               "offline": 1 if h["offline"] else 0}
        if h["offline"]:
            row["connector_id"] = h["connector_id"]
        rows.append(row)
    return rows


@method("event.unbind")
def event_unbind(portal, ctx, params):
    event = str(arg(params, "event") or "").upper()
    handler = arg(params, "handler")
    auth_type = arg(params, "auth_type")
    offline = str(arg(params, "event_type") or "online").lower() == "offline"
    keep, count = [], 0
    for h in portal.bound_events:
        hit = h["event"] == event and h["offline"] == offline and \
            (offline or handler is None or h["handler"] == handler) and \
            (auth_type is None or h["auth_type"] == str(auth_type))
        if hit:
            count += 1
        else:
            keep.append(h)
    portal.bound_events[:] = keep
    return {"count": count}


def _offline_rows(portal, params):
    flt = _dict(arg(params, "filter"))
    limit = int(arg(params, "limit") or 50)
    rows = list(portal.offline_events.values())
    if flt:
        pred = crm.compile_filter(flt, None, portal.tz)
        rows = [r for r in rows if pred(r)]
    return rows[:limit]


@method("event.offline.get")
def event_offline_get(portal, ctx, params):
    _require_admin(portal, ctx)
    rows = _offline_rows(portal, params)
    clear = str(arg(params, "clear", "1")) not in ("0", "N", "n", "false")
    process_id = None
    if clear:
        for row in rows:
            portal.offline_events.pop((row["EVENT_NAME"], str(row["EVENT_DATA"].get("FIELDS", {}).get("ID", ""))),
                                      None)
    else:
        process_id = secrets.token_hex(16)
        portal._offline_processes[process_id] = [row["ID"] for row in rows]
        for row in rows:
            row["PROCESS_ID"] = process_id
    events = [{k: row[k] for k in ("ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL",
                                   "MESSAGE_ID")} for row in rows]
    return {"process_id": process_id, "events": events}


@method("event.offline.list")
def event_offline_list(portal, ctx, params):
    _require_admin(portal, ctx)
    return [dict(row) for row in _offline_rows(portal, params)]


@method("event.offline.clear")
def event_offline_clear(portal, ctx, params):
    _require_admin(portal, ctx)
    process_id = arg(params, "process_id")
    ids = {str(v) for v in as_list(arg(params, "id"))}
    message_ids = {str(v) for v in as_list(arg(params, "message_id"))}
    for key, row in list(portal.offline_events.items()):
        if row["PROCESS_ID"] != process_id:
            continue
        if (not ids and not message_ids) or row["ID"] in ids or row["MESSAGE_ID"] in message_ids:
            del portal.offline_events[key]
    return True


@method("event.offline.error")
def event_offline_error(portal, ctx, params):
    _require_admin(portal, ctx)
    message_ids = {str(v) for v in as_list(arg(params, "message_id"))}
    for row in portal.offline_events.values():
        if row["MESSAGE_ID"] in message_ids:
            row["ERROR"] = "1"
            row["PROCESS_ID"] = None
    return True


# ---------------------------------------------------------------------- placements
PLACEMENTS = {"CRM_CONTACT_DETAIL_TAB", "CRM_COMPANY_DETAIL_TAB", "CRM_LEAD_DETAIL_TAB", "CRM_DEAL_DETAIL_TAB",
              "CRM_CONTACT_LIST_MENU", "CRM_COMPANY_LIST_MENU", "CRM_DEAL_LIST_MENU", "CRM_LEAD_LIST_MENU",
              "CRM_CONTACT_DETAIL_TOOLBAR", "CRM_COMPANY_DETAIL_TOOLBAR", "LEFT_MENU", "PAGE_BACKGROUND_WORKER",
              "CRM_CONTACT_DETAIL_ACTIVITY", "CRM_COMPANY_DETAIL_ACTIVITY", "USER_PROFILE_MENU"}


@method("placement.bind")
def placement_bind(portal, ctx, params):
    _require_admin(portal, ctx)
    code = str(arg(params, "PLACEMENT") or "").upper()
    if code == "DEFAULT":
        raise argument_error("Wrong value", "PLACEMENT")
    granted = portal.app["scope"].split(",")
    if code not in PLACEMENTS or (code.startswith("CRM_") and "crm" not in granted):
        raise RestError("ERROR_PLACEMENT_NOT_FOUND", "Placement not found", 400)
    handler = arg(params, "HANDLER")
    _check_handler(handler)
    for existing in portal.placements:
        if existing["placement"] == code and existing["handler"] == handler:
            raise RestError("ERROR_CORE", "Unable to set placement handler: Handler already binded", 400)
    lang_all = _dict(arg(params, "LANG_ALL"))
    title = arg(params, "TITLE") or (lang_all.get("ru") or lang_all.get("en") or {}).get("TITLE", "")
    portal.placements.append({"placement": code, "handler": handler, "title": title,
                              "description": arg(params, "DESCRIPTION") or "",
                              "options": _dict(arg(params, "OPTIONS")), "lang_all": lang_all})
    return True


@method("placement.get")
def placement_get(portal, ctx, params):
    return [{"placement": p["placement"], "handler": p["handler"], "title": p["title"],
             "description": p["description"], "options": p["options"] or [], "langAll": p["lang_all"] or []}
            for p in portal.placements]


@method("placement.unbind")
def placement_unbind(portal, ctx, params):
    _require_admin(portal, ctx)
    code = str(arg(params, "PLACEMENT") or "").upper()
    handler = arg(params, "HANDLER")
    before = len(portal.placements)
    portal.placements[:] = [p for p in portal.placements
                            if not (p["placement"] == code and (handler is None or p["handler"] == handler))]
    return {"count": before - len(portal.placements)}


@method("placement.list")
def placement_list(portal, ctx, params):
    return sorted(PLACEMENTS)


# ---------------------------------------------------------------------- robots
_ROBOT_CODE = re.compile(r"^[A-Za-z0-9._-]+$")


@method("bizproc.robot.add")
def robot_add(portal, ctx, params):
    _require_admin(portal, ctx)
    fields = {str(k).upper(): v for k, v in params.items()}
    code = str(fields.get("CODE") or "")
    if not _ROBOT_CODE.match(code) or not fields.get("HANDLER") or not fields.get("NAME"):
        raise RestError("ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity data", 400)
    if code in portal.robots:
        raise RestError("ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!", 400)
    _check_handler(fields["HANDLER"])
    portal.robots[code] = {"CODE": code, "HANDLER": fields["HANDLER"],
                           "AUTH_USER_ID": str(fields.get("AUTH_USER_ID") or 1),
                           "USE_SUBSCRIPTION": fields.get("USE_SUBSCRIPTION", ""), "NAME": fields["NAME"],
                           "DESCRIPTION": fields.get("DESCRIPTION", ""),
                           "PROPERTIES": _dict(fields.get("PROPERTIES")),
                           "RETURN_PROPERTIES": _dict(fields.get("RETURN_PROPERTIES")),
                           "DOCUMENT_TYPE": as_list(fields.get("DOCUMENT_TYPE")),
                           "FILTER": fields.get("FILTER")}
    return True


@method("bizproc.robot.update")
def robot_update(portal, ctx, params):
    _require_admin(portal, ctx)
    code = str(arg(params, "CODE") or "")
    if code not in portal.robots:
        raise RestError("ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!", 400)
    for key, value in _dict(arg(params, "FIELDS")).items():
        key = str(key).upper()
        if key in ("PROPERTIES", "RETURN_PROPERTIES"):
            value = _dict(value)
        if key == "HANDLER":
            _check_handler(value)
        portal.robots[code][key] = value
    return True


@method("bizproc.robot.delete")
def robot_delete(portal, ctx, params):
    _require_admin(portal, ctx)
    code = str(arg(params, "CODE") or "")
    if portal.robots.pop(code, None) is None:
        raise RestError("ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!", 400)
    return True


@method("bizproc.robot.list")
def robot_list(portal, ctx, params):
    return list(portal.robots)


@method("bizproc.event.send")
def bizproc_event_send(portal, ctx, params):
    portal.robot_reply(arg(params, "event_token"), _dict(arg(params, "return_values")) or {},
                       arg(params, "log_message"))
    return True


@method("bizproc.activity.log")
def bizproc_activity_log(portal, ctx, params):
    info = portal._event_tokens.get(arg(params, "event_token") or "")
    if info is None:
        raise access_denied()
    info.setdefault("log", []).append(arg(params, "log_message"))
    return True


# ---------------------------------------------------------------------- notifications, feed, tasks
# The docs name no length limit for a notification's MESSAGE (im-notify-system-add.md: only ATTACH,
# 60,000 characters), a timeline COMMENT (crm-timeline-comment-add.md) or a POST_MESSAGE
# (log-blogpost-add.md), yet a real portal refuses or truncates a text long enough. The devportal
# refuses any of them over TEXT_LIMIT characters with a 400, so a sender that does not keep its
# texts short finds out here rather than on a customer's portal.
TEXT_LIMIT = 20_000


def _text_too_long(value) -> bool:
    return isinstance(value, str) and len(value) > TEXT_LIMIT


def _notify(portal, ctx, params, kind):
    user_id = arg(params, "USER_ID")
    message = arg(params, "MESSAGE")
    if not user_id:
        raise RestError("USER_ID_EMPTY", "Recipient user ID not specified", 400)
    if not message:
        raise RestError("MESSAGE_EMPTY", "Message text not specified", 400)
    if _text_too_long(message):
        raise argument_error(f"Message is longer than {TEXT_LIMIT} characters", "MESSAGE")
    tag = arg(params, "TAG")
    if tag:
        full = portal.md5_tag(tag)
        portal.notifications[:] = [n for n in portal.notifications if n.get("tag") != full]
    nid = portal._next("notification")
    portal.notifications.append({"id": nid, "kind": kind, "user_id": int(user_id), "message": message,
                                 "message_out": arg(params, "MESSAGE_OUT"), "tag": portal.md5_tag(tag) if tag else None,
                                 "sub_tag": arg(params, "SUB_TAG"), "from_user_id": 0 if kind == "system" else ctx.user_id,
                                 "time": portal.iso()})
    return nid


@method("im.notify.system.add")
def notify_system(portal, ctx, params):
    return _notify(portal, ctx, params, "system")


@method("im.notify.personal.add")
def notify_personal(portal, ctx, params):
    return _notify(portal, ctx, params, "personal")


@method("im.notify")
def notify_legacy(portal, ctx, params):
    kind = "personal" if str(arg(params, "TYPE") or "").upper() == "USER" else "system"
    return _notify(portal, ctx, params, kind)


@method("log.blogpost.add")
def blogpost_add(portal, ctx, params):
    message = arg(params, "POST_MESSAGE")
    if not message:
        raise argument_error("Empty post message", "POST_MESSAGE")
    if _text_too_long(message):
        # The docs' general "not added" error of log.blogpost.add (log-blogpost-add.md).
        raise RestError("SONET_CONTROLLER_LIVEFEED_BLOGPOST_ADD_ERROR", "Blog post hasn't been added", 400)
    pid = portal._next("blogpost")
    author = arg(params, "USER_ID") if portal.is_admin(ctx.user_id) and arg(params, "USER_ID") else ctx.user_id
    portal.blog_posts.append({"id": pid, "title": arg(params, "POST_TITLE") or "", "message": message,
                              "dest": as_list(arg(params, "DEST")) or ["UA"], "important": arg(params, "IMPORTANT"),
                              "author_id": int(author), "time": portal.iso()})
    return pid


@method("tasks.task.add")
def task_add(portal, ctx, params):
    fields = _dict(arg(params, "fields"))
    upper = {str(k).upper(): v for k, v in fields.items()}
    if not upper.get("TITLE"):
        raise RestError("ERROR_CORE", "Не указано название задачи", 400)
    if not upper.get("RESPONSIBLE_ID"):
        raise RestError("ERROR_CORE", "Не указан ответственный", 400)
    tid = portal._next("task")
    task = {"id": str(tid), "title": upper["TITLE"], "description": upper.get("DESCRIPTION", ""),
            "responsibleId": str(upper["RESPONSIBLE_ID"]), "createdBy": str(upper.get("CREATED_BY") or ctx.user_id),
            "deadline": upper.get("DEADLINE"), "createdDate": portal.iso(), "status": "2",
            "ufCrmTask": [str(v) for v in as_list(upper.get("UF_CRM_TASK"))], "groupId": str(upper.get("GROUP_ID") or 0)}
    portal.tasks.append(task)
    return {"task": task}


# ---------------------------------------------------------------------- CRM entities
def _entity_methods(entity: str):
    prefix = f"crm.{entity}"
    schema = crm.SCHEMAS[entity]

    def export(record: dict, select: list[str] | None) -> dict:
        if select is None:  # .get: everything, with multi-fields when present
            out = {k: v for k, v in record.items() if k not in crm.MULTI_FIELDS}
            for name in crm.MULTI_FIELDS:
                if record.get(name):
                    out[name] = [dict(e) for e in record[name]]
            return out
        wanted = set(select)
        all_std = not wanted or "*" in wanted
        out = {}
        for key, value in record.items():
            if key in crm.MULTI_FIELDS:
                continue
            if key.startswith("UF_"):
                if all_std or "UF_*" in wanted or key in wanted:
                    out[key] = value
            elif all_std or key in wanted or key == "ID":
                out[key] = value
        for name in crm.MULTI_FIELDS:
            if name in wanted and record.get(name):
                out[name] = [dict(e) for e in record[name]]
        return out

    def add(portal, ctx, params):
        fields = _dict(arg(params, "fields"))
        return portal.add_record(entity, fields, ctx.user_id)

    def get(portal, ctx, params):
        rid = arg(params, "id")
        if rid in (None, "") or not str(rid).isdigit() or int(rid) <= 0:
            raise legacy_crm_error("ID is not defined or invalid.")
        return export(portal.get_record(entity, rid), None)

    def update(portal, ctx, params):
        rid = arg(params, "id")
        if rid in (None, "") or not str(rid).isdigit() or int(rid) <= 0:
            raise legacy_crm_error("ID is not defined or invalid.")
        return portal.update_record(entity, rid, _dict(arg(params, "fields")), ctx.user_id)

    def delete(portal, ctx, params):
        rid = arg(params, "id")
        if rid in (None, "") or not str(rid).isdigit() or int(rid) <= 0:
            raise legacy_crm_error("ID is not defined or invalid.")
        return portal.delete_record(entity, rid, ctx.user_id)

    def list_(portal, ctx, params):
        flt = _dict(arg(params, "filter"))
        order = _dict(arg(params, "order"))
        select = _select(arg(params, "select"))
        full_schema = {**schema, **{n: _uf_schema(d) for n, d in portal.userfields[entity].items()}}
        page, total, nxt = crm.list_page(portal.records[entity], flt, order, arg(params, "start", 0), full_schema,
                                         portal.tz)
        return Listing([export(r, select) for r in page], total, nxt)

    def fields(portal, ctx, params):
        out = {k: dict(v) for k, v in schema.items()}
        for name, definition in portal.userfields[entity].items():
            out[name] = _uf_schema(definition)
        return out

    METHODS[f"{prefix}.add"] = add
    METHODS[f"{prefix}.get"] = get
    METHODS[f"{prefix}.update"] = update
    METHODS[f"{prefix}.delete"] = delete
    METHODS[f"{prefix}.list"] = list_
    METHODS[f"{prefix}.fields"] = fields
    _userfield_methods(entity)


def _uf_schema(definition: dict) -> dict:
    out = {"type": definition["USER_TYPE_ID"], "isRequired": definition["MANDATORY"] == "Y", "isReadOnly": False,
           "isImmutable": False, "isMultiple": definition["MULTIPLE"] == "Y", "isDynamic": True,
           "title": definition["FIELD_NAME"], "listLabel": definition["LIST_COLUMN_LABEL"],
           "formLabel": definition["EDIT_FORM_LABEL"], "filterLabel": definition["LIST_FILTER_LABEL"],
           "settings": definition["SETTINGS"]}
    if definition["USER_TYPE_ID"] == "enumeration":
        out["items"] = [{"ID": item["ID"], "VALUE": item["VALUE"]} for item in definition["LIST"]]
    return out


_UF_NAME = re.compile(r"^[A-Z0-9_]+$")


def _label(value, default):
    if isinstance(value, dict):
        return value.get("ru") or value.get("en") or next(iter(value.values()), default)
    return value or default


def _userfield_methods(entity: str):
    prefix = f"crm.{entity}.userfield"
    entity_id = f"CRM_{entity.upper()}"

    def _list_items(portal, definition, items):
        current = definition["LIST"]
        for item in as_list(items):
            if not isinstance(item, dict):
                continue
            item = {str(k).upper(): v for k, v in item.items()}
            item_id = str(item.get("ID") or "")
            if item_id:
                existing = next((i for i in current if i["ID"] == item_id), None)
                if existing is None:
                    continue
                if str(item.get("DEL", "")).upper() == "Y":
                    current.remove(existing)
                    continue
                for key in ("VALUE", "SORT", "DEF", "XML_ID"):
                    if key == "XML_ID" and portal.enum_xml_ids == "own":
                        continue
                    if key in item:
                        existing[key] = str(item[key])
                continue
            if not item.get("VALUE"):
                continue
            new_id = str(portal._next("uf_item"))
            current.append({"ID": new_id, "SORT": str(item.get("SORT") or 500), "VALUE": str(item["VALUE"]),
                            "DEF": "Y" if str(item.get("DEF", "N")).upper() == "Y" else "N",
                            "XML_ID": str((portal.enum_xml_ids != "own" and item.get("XML_ID")) or _xml_id())})
        current.sort(key=lambda i: (int(i["SORT"]) if i["SORT"].lstrip("-").isdigit() else 500, int(i["ID"])))

    def add(portal, ctx, params):
        _require_admin(portal, ctx)
        fields = {str(k).upper(): v for k, v in _dict(arg(params, "fields")).items()}
        name = str(fields.get("FIELD_NAME") or "").upper()
        if not name or not _UF_NAME.match(name):
            raise argument_error("FIELD_NAME is invalid", "FIELD_NAME")
        if not name.startswith("UF_CRM_"):
            name = "UF_CRM_" + name
        if len(name) > 50:
            raise argument_error("FIELD_NAME is too long", "FIELD_NAME")
        if name in portal.userfields[entity]:
            raise RestError("ERROR_CORE", f"Ошибка при добавлении пользовательского поля {name}", 400)
        _yes_no(fields, "SHOW_FILTER")
        label = fields.get("LABEL")
        definition = {
            "ID": str(portal._next("uf")), "ENTITY_ID": entity_id, "FIELD_NAME": name,
            "USER_TYPE_ID": str(fields.get("USER_TYPE_ID") or "string"), "XML_ID": fields.get("XML_ID"),
            "SORT": str(fields.get("SORT") or 100), "MULTIPLE": "Y" if str(fields.get("MULTIPLE", "N")).upper() in
            ("Y", "1", "TRUE") else "N", "MANDATORY": "Y" if str(fields.get("MANDATORY", "N")).upper() in
            ("Y", "1", "TRUE") else "N", "SHOW_FILTER": str(fields.get("SHOW_FILTER") or "N"),
            "SHOW_IN_LIST": str(fields.get("SHOW_IN_LIST") or "Y"), "EDIT_IN_LIST": str(fields.get("EDIT_IN_LIST")
                                                                                       or "Y"),
            "IS_SEARCHABLE": "N", "SETTINGS": _dict(fields.get("SETTINGS")) or {},
            "EDIT_FORM_LABEL": _label(fields.get("EDIT_FORM_LABEL"), _label(label, name)),
            "LIST_COLUMN_LABEL": _label(fields.get("LIST_COLUMN_LABEL"), _label(label, name)),
            "LIST_FILTER_LABEL": _label(fields.get("LIST_FILTER_LABEL"), _label(label, name)),
            "LIST": []}
        if definition["USER_TYPE_ID"] == "enumeration":
            _list_items(portal, definition, fields.get("LIST"))
        portal.userfields[entity][name] = definition
        for record in portal.records[entity].values():
            record.setdefault(name, [] if definition["MULTIPLE"] == "Y" else None)
        return int(definition["ID"])

    def _find(portal, rid):
        for definition in portal.userfields[entity].values():
            if definition["ID"] == str(rid):
                return definition
        raise RestError("ERROR_NOT_FOUND", "The entity with ID '%s' is not found." % rid, 400)

    def _export(definition):
        out = {k: v for k, v in definition.items() if k != "LIST"}
        if definition["USER_TYPE_ID"] == "enumeration":
            out["LIST"] = [dict(i) for i in definition["LIST"]]
        return out

    def get(portal, ctx, params):
        return _export(_find(portal, arg(params, "id")))

    def list_(portal, ctx, params):
        flt = _dict(arg(params, "filter"))
        rows = []
        for definition in portal.userfields[entity].values():
            ok = all(str(definition.get(str(k).upper(), "")) == str(v) for k, v in flt.items()
                     if str(k).upper() not in ("LANG",))
            if ok:
                rows.append(_export(definition))
        return rows

    def update(portal, ctx, params):
        _require_admin(portal, ctx)
        definition = _find(portal, arg(params, "id"))
        fields = {str(k).upper(): v for k, v in _dict(arg(params, "fields")).items()}
        _yes_no(fields, "SHOW_FILTER")
        for key in ("SORT", "MANDATORY", "SHOW_FILTER", "SHOW_IN_LIST", "EDIT_IN_LIST", "XML_ID"):
            if key in fields:
                definition[key] = str(fields[key])
        for key in ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL"):
            if key in fields or "LABEL" in fields:
                definition[key] = _label(fields.get(key, fields.get("LABEL")), definition[key])
        if "SETTINGS" in fields:
            definition["SETTINGS"] = _dict(fields["SETTINGS"])
        if "LIST" in fields and definition["USER_TYPE_ID"] == "enumeration":
            _list_items(portal, definition, fields["LIST"])
            valid = {i["ID"] for i in definition["LIST"]}
            for record in portal.records[entity].values():  # values of deleted items vanish
                value = record.get(definition["FIELD_NAME"])
                if isinstance(value, list):
                    record[definition["FIELD_NAME"]] = [v for v in value if v in valid]
                elif value is not None and value not in valid:
                    record[definition["FIELD_NAME"]] = None
        return True

    def delete(portal, ctx, params):
        _require_admin(portal, ctx)
        definition = _find(portal, arg(params, "id"))
        del portal.userfields[entity][definition["FIELD_NAME"]]
        for record in portal.records[entity].values():
            record.pop(definition["FIELD_NAME"], None)
        return True

    METHODS[f"{prefix}.add"] = add
    METHODS[f"{prefix}.get"] = get
    METHODS[f"{prefix}.list"] = list_
    METHODS[f"{prefix}.update"] = update
    METHODS[f"{prefix}.delete"] = delete


def _yes_no(fields: dict, key: str) -> None:
    """A flag the docs list as Y or N (crm-contact-userfield-add.md: SHOW_FILTER) takes nothing else."""
    if key in fields and str(fields[key]).upper() not in ("Y", "N"):
        raise argument_error(f"{key} must be Y or N", key)


def _xml_id() -> str:
    return secrets.token_hex(16)


for _entity in crm.SCHEMAS:
    _entity_methods(_entity)


@method("crm.status.list")
def status_list(portal, ctx, params):
    flt = {str(k).upper(): v for k, v in _dict(arg(params, "filter")).items()}
    rows = []
    sid = 0
    for entity_id, items in (("DEAL_STAGE", crm.DEAL_STAGES), ("STATUS", crm.LEAD_STATUSES)):
        for code, name, sort, semantic in items:
            sid += 1
            sem = {"S": "success", "F": "failure"}.get(semantic)
            color = {"S": "#7BD500", "F": "#FF5752"}.get(semantic, "#39A8EF")
            rows.append({"ID": str(sid), "ENTITY_ID": entity_id, "STATUS_ID": code, "NAME": name,
                         "NAME_INIT": name, "SORT": str(sort), "SYSTEM": "Y" if semantic != "P" or code == "NEW"
                         else "N", "COLOR": color, "SEMANTICS": sem, "CATEGORY_ID": "0" if entity_id == "DEAL_STAGE"
                         else None, "EXTRA": {"SEMANTICS": {"S": "success", "F": "failure"}.get(semantic, "process"),
                                              "COLOR": color}})
    for key, value in flt.items():
        rows = [r for r in rows if str(r.get(key)) == str(value)]
    return rows


# doc: api-reference/crm/crm-stage-history-list.md (items with integer IDs)
@method("crm.stagehistory.list")
def stage_history_list(portal, ctx, params):
    kind = {1: "lead", 2: "deal"}.get(int(arg(params, "entityTypeId") or 0))
    if kind is None:
        raise RestError("ENTITY_TYPE_NOT_SUPPORTED", "Entity type is not supported", 400)
    rows = [r for r in portal.stage_history if r["_entity"] == kind]
    flt = _dict(arg(params, "filter"))
    if flt:
        pred = crm.compile_filter(flt, _STAGE_HISTORY_SCHEMA, portal.tz)
        rows = [r for r in rows if pred(r)]
    rows = crm.sort_records(rows, _dict(arg(params, "order")), _STAGE_HISTORY_SCHEMA, portal.tz)
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    select = _select(arg(params, "select"))
    items = [{k: v for k, v in r.items() if not k.startswith("_") and (not select or "*" in select or k in select)}
             for r in page]
    return Listing({"items": items}, total, nxt)


_STAGE_HISTORY_SCHEMA = {"ID": {"type": "integer"}, "TYPE_ID": {"type": "integer"}, "OWNER_ID": {"type": "integer"},
                         "CATEGORY_ID": {"type": "integer"}, "CREATED_TIME": {"type": "datetime"}}


# ---------------------------------------------------------------------- activities
def _export_activity(row: dict, select: list[str] | None) -> dict:
    out = {k: v for k, v in row.items() if k not in ("COMMUNICATIONS", "BINDINGS")}
    if select and "*" not in select:
        out = {k: v for k, v in out.items() if k in select or k == "ID"}
    if select and "COMMUNICATIONS" in select:
        out["COMMUNICATIONS"] = [dict(c, ID=str(i + 1)) for i, c in enumerate(row.get("COMMUNICATIONS") or [])]
    return out


@method("crm.activity.list")
def activity_list(portal, ctx, params):
    flt = dict(_dict(arg(params, "filter")))
    bindings = flt.pop("BINDINGS", None)
    source = portal.activities
    if bindings:
        # A pair may name the owner type alone (crm-activity-list.md, "Using BINDINGS").
        wanted = [(str(b.get("OWNER_TYPE_ID")), None if b.get("OWNER_ID") in (None, "") else str(b["OWNER_ID"]))
                  for b in as_list(bindings) if isinstance(b, dict)]
        source = {k: r for k, r in source.items()
                  if any(str(b["OWNER_TYPE_ID"]) == t and (i is None or str(b["OWNER_ID"]) == i)
                         for b in r.get("BINDINGS") or [] for t, i in wanted)}
    order = _dict(arg(params, "order")) or {"START_TIME": "ASC"}
    page, total, nxt = crm.list_page(source, flt, order, arg(params, "start", 0), None, portal.tz)
    select = _select(arg(params, "select"))
    return Listing([_export_activity(r, select) for r in page], total, nxt)


@method("crm.activity.get")
def activity_get(portal, ctx, params):
    rid = arg(params, "id")
    try:
        row = portal.activities.get(int(rid))
    except (TypeError, ValueError):
        raise legacy_crm_error("ID is not defined or invalid.") from None
    if row is None:
        raise legacy_crm_error("Not found")
    # The documented answer (crm-activity-get.md) has COMMUNICATIONS but no BINDINGS: the other
    # items a call is bound to come from crm.activity.binding.list.
    out = _export_activity(row, None)
    out["COMMUNICATIONS"] = [dict(c, ID=str(i + 1)) for i, c in enumerate(row.get("COMMUNICATIONS") or [])]
    return out


# doc: api-reference/crm/timeline/activities/binding/crm-activity-binding-list.md
@method("crm.activity.binding.list")
def activity_binding_list(portal, ctx, params):
    rid = arg(params, "activityId")
    if rid in (None, ""):
        raise RestError("100", "Required fields are not provided: activityId", 400)
    try:
        row = portal.activities.get(int(rid))
    except (TypeError, ValueError):
        raise RestError("100", "activityId must be an integer", 400) from None
    if row is None:
        raise RestError("NOT_FOUND", "Element not found", 400)
    return [{"entityTypeId": int(b["OWNER_TYPE_ID"]), "entityId": int(b["OWNER_ID"])}
            for b in row.get("BINDINGS") or []]


@method("crm.activity.todo.add")
def activity_todo_add(portal, ctx, params):
    owner_type = arg(params, "ownerTypeId")
    owner_id = arg(params, "ownerId")
    deadline = arg(params, "deadline")
    if not owner_type or not owner_id:
        raise RestError("OWNER_NOT_FOUND", "Owner not found", 400)
    if not deadline:
        raise argument_error("deadline is required", "deadline")
    when = crm.parse_datetime(deadline, portal.tz)
    responsible = arg(params, "responsibleId") or ctx.user_id
    aid = portal.add_activity({"OWNER_ID": owner_id, "OWNER_TYPE_ID": owner_type, "TYPE_ID": 6,
                               "PROVIDER_ID": "CRM_TODO", "PROVIDER_TYPE_ID": "TODO",
                               "SUBJECT": arg(params, "title") or "", "DESCRIPTION": arg(params, "description") or "",
                               "START_TIME": portal.iso(when) if when else None,
                               "END_TIME": portal.iso(when) if when else None,
                               "DEADLINE": portal.iso(when) if when else None, "COMPLETED": "N", "STATUS": "1",
                               "RESPONSIBLE_ID": responsible, "DIRECTION": 0}, ctx.user_id)
    portal.todos.append({"id": aid, "owner_type_id": int(owner_type), "owner_id": int(owner_id),
                         "title": arg(params, "title"), "responsible_id": int(responsible)})
    return {"id": aid}


_STATISTIC_SCHEMA = {"ID": {"type": "integer"}, "PORTAL_USER_ID": {"type": "user"}, "CALL_TYPE": {"type": "integer"},
                     "CALL_DURATION": {"type": "integer"}, "CRM_ENTITY_ID": {"type": "integer"},
                     "CRM_ACTIVITY_ID": {"type": "integer"}, "CALL_START_DATE": {"type": "datetime"}}


# doc: api-reference/telephony/voximplant/voximplant-statistic-get.md
@method("voximplant.statistic.get")
def statistic_get(portal, ctx, params):
    rows = list(portal.call_statistics)
    flt = _dict(arg(params, "FILTER"))
    if flt:
        pred = crm.compile_filter(flt, _STATISTIC_SCHEMA, portal.tz)
        rows = [r for r in rows if pred(r)]
    sort = arg(params, "SORT")
    if sort:
        rows = crm.sort_records(rows, {sort: arg(params, "ORDER") or "ASC"}, _STATISTIC_SCHEMA, portal.tz)
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing([dict(r) for r in page], total, nxt)


# ---------------------------------------------------------------------- timeline, duplicates
_TIMELINE_TYPES = {"lead", "deal", "contact", "company"}


@method("crm.timeline.comment.add")
def timeline_comment_add(portal, ctx, params):
    fields = params.get("fields")  # the only method whose top-level key must be lower case
    if not isinstance(fields, dict):
        raise argument_error("Fields are empty", "fields")
    entity_type = str(fields.get("ENTITY_TYPE") or "").lower()
    entity_id = fields.get("ENTITY_ID")
    if entity_type not in _TIMELINE_TYPES and not entity_type.startswith("dynamic_"):
        raise argument_error("Entity type is not supported", "ENTITY_TYPE")
    if entity_type in _TIMELINE_TYPES and int(entity_id or 0) not in portal.records[entity_type]:
        raise RestError("NOT_FOUND", "Not found", 400)
    if not fields.get("COMMENT"):
        raise argument_error("Empty comment message.", "COMMENT")
    if _text_too_long(fields.get("COMMENT")):
        raise argument_error(f"Comment is longer than {TEXT_LIMIT} characters", "COMMENT")
    cid = portal._next("timeline")
    portal.timeline_comments.append({"ID": str(cid), "CREATED": portal.iso(), "ENTITY_ID": int(entity_id),
                                     "ENTITY_TYPE": entity_type, "AUTHOR_ID": str(fields.get("AUTHOR_ID") or
                                                                                  ctx.user_id),
                                     "COMMENT": fields["COMMENT"], "FILES": []})
    return cid


@method("crm.timeline.comment.list")
def timeline_comment_list(portal, ctx, params):
    flt = {str(k).upper(): v for k, v in _dict(arg(params, "filter")).items()}
    rows = [dict(c) for c in portal.timeline_comments
            if ("ENTITY_ID" not in flt or str(c["ENTITY_ID"]) == str(flt["ENTITY_ID"]))
            and ("ENTITY_TYPE" not in flt or c["ENTITY_TYPE"] == str(flt["ENTITY_TYPE"]).lower())]
    order = {str(k).upper(): str(v).upper() for k, v in _dict(arg(params, "order")).items()}
    if order.get("ID") == "DESC" or order.get("CREATED") == "DESC":  # ID and CREATED grow together
        rows.reverse()
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing(page, total, nxt)


def _digits(value: str) -> str:
    digits = re.sub(r"\D", "", str(value).split(" доб")[0].split("ext")[0].split("#")[0])
    if len(digits) == 11 and digits[0] in "78":
        digits = digits[1:]  # +7 and 8 prefixes name the same Russian number
    return digits


@method("crm.duplicate.findbycomm")
def duplicate_find(portal, ctx, params):
    kind = str(arg(params, "type") or "").upper()
    if kind not in ("PHONE", "EMAIL"):
        raise argument_error("Communication type is not supported", "type")
    values = as_list(arg(params, "values"))
    if not values:
        raise argument_error("Values are empty", "values")
    if len(values) > 20:
        raise argument_error("Too many values", "values")
    norm = (lambda v: _digits(v)) if kind == "PHONE" else (lambda v: str(v).strip().lower())
    wanted = {norm(v) for v in values if norm(v)}
    types = [str(arg(params, "entity_type")).lower()] if arg(params, "entity_type") else ["lead", "contact", "company"]
    found = {}
    for entity in types:
        ids = [int(r["ID"]) for r in portal.records.get(entity, {}).values()
               if any(norm(e["VALUE"]) in wanted for e in r.get(kind) or [])]
        if ids:
            found[entity.upper()] = ids
    return found if found else []


# ---------------------------------------------------------------------- crm.item.* (camelCase, `fm`)
_ITEM_TYPES = {1: "lead", 2: "deal", 3: "contact", 4: "company"}
_ITEM_NAMES = {"ID": "id", "DATE_CREATE": "createdTime", "DATE_MODIFY": "updatedTime", "CREATED_BY_ID": "createdBy",
               "MODIFY_BY_ID": "updatedBy", "COMPANY_TYPE": "typeId"}


def _camel(name: str) -> str:
    if name in _ITEM_NAMES:
        return _ITEM_NAMES[name]
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _item_entity(params) -> str:
    try:
        entity = _ITEM_TYPES.get(int(arg(params, "entityTypeId") or 0))
    except (TypeError, ValueError):
        entity = None
    if entity is None:
        raise RestError("NOT_FOUND", "Smart process not found", 400)
    return entity


def _item_view(record: dict, select: list[str] | None, original_uf: bool) -> dict:
    out = {}
    for key, value in record.items():
        if key in crm.MULTI_FIELDS:
            continue
        name = key if (original_uf and key.startswith("UF_")) else _camel(key)
        out[name] = int(value) if key == "ID" else value
    if select is None or "*" in select:
        out["fm"] = [{"id": int(e["ID"]), "typeId": e["TYPE_ID"], "valueType": e["VALUE_TYPE"], "value": e["VALUE"]}
                     for name in crm.MULTI_FIELDS for e in record.get(name) or []]
    if select and "*" not in select:
        wanted = {s.lower() for s in select} | {"id"}
        out = {k: v for k, v in out.items() if k.lower() in wanted}
    return out


def _item_fields(entity: str, portal, fields: dict) -> dict:
    """camelCase item fields (and `fm`) to the legacy upper-case fields the store applies."""
    names = {_camel(n): n for n in crm.SCHEMAS[entity]} | {_camel(n): n for n in portal.userfields[entity]}
    out: dict = {}
    for key, value in (fields or {}).items():
        if key == "fm":
            for fm_key, entry in (value.items() if isinstance(value, dict) else enumerate(value or [])):
                if not isinstance(entry, dict):
                    continue
                type_id = str(entry.get("typeId") or "PHONE").upper()
                legacy = {"VALUE": entry.get("value", ""), "VALUE_TYPE": entry.get("valueType")}
                if str(fm_key).isdigit() and not isinstance(value, list):
                    legacy["ID"] = str(fm_key)
                elif entry.get("id"):
                    legacy["ID"] = str(entry["id"])
                out.setdefault(type_id, []).append(legacy)
            continue
        name = names.get(key) or (key.upper() if key.upper() in names.values() else None)
        if name:
            out[name] = value
    return out


@method("crm.item.get")
def item_get(portal, ctx, params):
    entity = _item_entity(params)
    record = portal.records[entity].get(int(arg(params, "id") or 0))
    if record is None:
        raise RestError("NOT_FOUND", "Элемент не найден", 400)
    return {"item": _item_view(record, None, str(arg(params, "useOriginalUfNames", "N")).upper() == "Y")}


@method("crm.item.list")
def item_list(portal, ctx, params):
    entity = _item_entity(params)
    original = str(arg(params, "useOriginalUfNames", "N")).upper() == "Y"
    names = {_camel(n).lower(): n for n in list(crm.SCHEMAS[entity]) + list(portal.userfields[entity])}
    flt = {}
    for key, value in _dict(arg(params, "filter")).items():
        if str(key).lower() == "logic":
            continue
        op, field = crm.split_filter_key(str(key))
        flt[("" if op == "=" and not str(key).startswith("=") else op) + names.get(field.lower(), field.upper())] = value
    order = {names.get(str(k).lower(), str(k).upper()): v for k, v in _dict(arg(params, "order")).items()}
    schema = {**crm.SCHEMAS[entity], **{n: _uf_schema(d) for n, d in portal.userfields[entity].items()}}
    rows = list(portal.records[entity].values())
    if flt:
        pred = crm.compile_filter(flt, schema, portal.tz)
        rows = [r for r in rows if pred(r)]
    rows = crm.sort_records(rows, order, schema, portal.tz)
    start = arg(params, "start", 0)
    try:
        start = int(start or 0)
    except (TypeError, ValueError):
        start = 0
    if start == -1:
        page, total, nxt = rows[:crm.PAGE], None, None
    else:  # ORM methods page from the exact offset
        start = max(0, start)
        page, total = rows[start:start + crm.PAGE], len(rows)
        nxt = start + crm.PAGE if start + crm.PAGE < total else None
    select = _select(arg(params, "select")) or None
    return Listing({"items": [_item_view(r, select, original) for r in page]}, total, nxt)


@method("crm.item.add")
def item_add(portal, ctx, params):
    entity = _item_entity(params)
    rid = portal.add_record(entity, _item_fields(entity, portal, _dict(arg(params, "fields"))), ctx.user_id)
    return {"item": _item_view(portal.records[entity][rid], None, False)}


@method("crm.item.update")
def item_update(portal, ctx, params):
    entity = _item_entity(params)
    record = portal.records[entity].get(int(arg(params, "id") or 0))
    if record is None:
        raise RestError("NOT_FOUND", "Элемент не найден", 400)
    fields = _item_fields(entity, portal, _dict(arg(params, "fields")))
    trial = copy.deepcopy(record)
    portal._apply_fields(entity, trial, copy.deepcopy(fields))
    if trial != record:  # crm.item.update skips the save when nothing changes
        portal.update_record(entity, record["ID"], fields, ctx.user_id)
    return {"item": _item_view(record, None, False)}


@method("crm.item.delete")
def item_delete(portal, ctx, params):
    entity = _item_entity(params)
    if int(arg(params, "id") or 0) not in portal.records[entity]:
        raise RestError("NOT_FOUND", "Элемент не найден", 400)
    portal.delete_record(entity, arg(params, "id"), ctx.user_id)
    return []
