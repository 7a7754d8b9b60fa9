"""REST methods of the app itself: app.info, server.time, scope, app options, event binding and
the offline event queue (event.*), and placements (placement.*)."""
from __future__ import annotations

import secrets

from devportal import crm
from devportal.errors import RestError, argument_error
from devportal.methods.common import arg, as_dict, check_handler, registrar, require_admin
from devportal.phpquery import as_list

METHODS: dict = {}
method = registrar(METHODS)


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


@method("app.option.set")
def app_option_set(portal, ctx, params):
    require_admin(portal, ctx)
    options = as_dict(arg(params, "options"))
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
        require_admin(portal, ctx)
        handler = ""
    else:
        check_handler(handler)
    auth_type = str(arg(params, "auth_type") or "0")
    if auth_type != "0" and auth_type != str(ctx.user_id):
        require_admin(portal, ctx)
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
    flt = as_dict(arg(params, "filter"))
    limit = int(arg(params, "limit") or 50)
    rows = list(portal.offline_events.values())
    if flt:
        pred = crm.compile_filter(flt, None, portal.tz)
        rows = [r for r in rows if pred(r)]
    return rows[:limit]


@method("event.offline.get")
def event_offline_get(portal, ctx, params):
    require_admin(portal, ctx)
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
    require_admin(portal, ctx)
    return [dict(row) for row in _offline_rows(portal, params)]


@method("event.offline.clear")
def event_offline_clear(portal, ctx, params):
    require_admin(portal, ctx)
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
    require_admin(portal, ctx)
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
    require_admin(portal, ctx)
    code = str(arg(params, "PLACEMENT") or "").upper()
    if code == "DEFAULT":
        raise argument_error("Wrong value", "PLACEMENT")
    granted = portal.app["scope"].split(",")
    if code not in PLACEMENTS or (code.startswith("CRM_") and "crm" not in granted):
        raise RestError("ERROR_PLACEMENT_NOT_FOUND", "Placement not found", 400)
    handler = arg(params, "HANDLER")
    check_handler(handler)
    for existing in portal.placements:
        if existing["placement"] == code and existing["handler"] == handler:
            raise RestError("ERROR_CORE", "Unable to set placement handler: Handler already binded", 400)
    lang_all = as_dict(arg(params, "LANG_ALL"))
    title = arg(params, "TITLE") or (lang_all.get("ru") or lang_all.get("en") or {}).get("TITLE", "")
    portal.placements.append({"placement": code, "handler": handler, "title": title,
                              "description": arg(params, "DESCRIPTION") or "",
                              "options": as_dict(arg(params, "OPTIONS")), "lang_all": lang_all})
    return True


@method("placement.get")
def placement_get(portal, ctx, params):
    return [{"placement": p["placement"], "handler": p["handler"], "title": p["title"],
             "description": p["description"], "options": p["options"] or [], "langAll": p["lang_all"] or []}
            for p in portal.placements]


@method("placement.unbind")
def placement_unbind(portal, ctx, params):
    require_admin(portal, ctx)
    code = str(arg(params, "PLACEMENT") or "").upper()
    handler = arg(params, "HANDLER")
    before = len(portal.placements)
    portal.placements[:] = [p for p in portal.placements
                            if not (p["placement"] == code and (handler is None or p["handler"] == handler))]
    return {"count": before - len(portal.placements)}


@method("placement.list")
def placement_list(portal, ctx, params):
    return sorted(PLACEMENTS)
