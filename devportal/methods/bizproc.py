"""REST methods of robots (bizproc.robot.*) and their answers (bizproc.event.send, bizproc.activity.log)."""
from __future__ import annotations

import re

from devportal.errors import RestError, access_denied
from devportal.methods.common import arg, as_dict, check_handler, registrar, require_admin
from devportal.phpquery import as_list

METHODS: dict = {}
method = registrar(METHODS)


_ROBOT_CODE = re.compile(r"^[A-Za-z0-9._-]+$")


@method("bizproc.robot.add")
def robot_add(portal, ctx, params):
    require_admin(portal, ctx)
    fields = {str(k).upper(): v for k, v in params.items()}
    code = str(fields.get("CODE") or "")
    if not _ROBOT_CODE.match(code) or not fields.get("HANDLER") or not fields.get("NAME"):
        raise RestError("ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity data", 400)
    if code in portal.robots:
        raise RestError("ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!", 400)
    check_handler(fields["HANDLER"])
    portal.robots[code] = {"CODE": code, "HANDLER": fields["HANDLER"],
                           "AUTH_USER_ID": str(fields.get("AUTH_USER_ID") or 1),
                           "USE_SUBSCRIPTION": fields.get("USE_SUBSCRIPTION", ""), "NAME": fields["NAME"],
                           "DESCRIPTION": fields.get("DESCRIPTION", ""),
                           "PROPERTIES": as_dict(fields.get("PROPERTIES")),
                           "RETURN_PROPERTIES": as_dict(fields.get("RETURN_PROPERTIES")),
                           "DOCUMENT_TYPE": as_list(fields.get("DOCUMENT_TYPE")),
                           "FILTER": fields.get("FILTER")}
    return True


@method("bizproc.robot.update")
def robot_update(portal, ctx, params):
    require_admin(portal, ctx)
    code = str(arg(params, "CODE") or "")
    if code not in portal.robots:
        raise RestError("ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!", 400)
    for key, value in as_dict(arg(params, "FIELDS")).items():
        key = str(key).upper()
        if key in ("PROPERTIES", "RETURN_PROPERTIES"):
            value = as_dict(value)
        if key == "HANDLER":
            check_handler(value)
        portal.robots[code][key] = value
    return True


@method("bizproc.robot.delete")
def robot_delete(portal, ctx, params):
    require_admin(portal, ctx)
    code = str(arg(params, "CODE") or "")
    if portal.robots.pop(code, None) is None:
        raise RestError("ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!", 400)
    return True


@method("bizproc.robot.list")
def robot_list(portal, ctx, params):
    return list(portal.robots)


@method("bizproc.event.send")
def bizproc_event_send(portal, ctx, params):
    portal.robot_reply(arg(params, "event_token"), as_dict(arg(params, "return_values")) or {},
                       arg(params, "log_message"))
    return True


@method("bizproc.activity.log")
def bizproc_activity_log(portal, ctx, params):
    info = portal._event_tokens.get(arg(params, "event_token") or "")
    if info is None:
        raise access_denied()
    info.setdefault("log", []).append(arg(params, "log_message"))
    return True
