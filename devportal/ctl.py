"""The devportal's control API (`/_dev/...`, JSON): the same actions as the DevPortal object, over HTTP."""
from __future__ import annotations

import json
from datetime import datetime

from werkzeug.wrappers import Request, Response

from devportal.crm import parse_datetime
from devportal.errors import RestError

# GET /_dev/<name>: what the app did, as recorded by the portal
READERS = {"calls", "notifications", "timeline_comments", "tasks", "blog_posts", "options", "bound_events",
           "placements", "robot_replies", "deliveries", "todos", "http_requests", "stage_robots", "robots",
           "stage_history"}

# POST /_dev/<name> with a JSON object of keyword arguments
ACTIONS = {"seed", "register_app", "add_user", "add_department", "deactivate_user", "set_department_head", "install_app",
           "finish_install", "install_finish", "uninstall_app", "update_app", "act_update", "act_add", "act_delete", "act_call",
           "act_close_deal", "act_move_stage", "expire_tokens", "set_faults", "set_limits", "set_plan", "set_method_cost",
           "run_robot", "bind_stage_robot", "set_clock", "advance", "issue_tokens", "wait_for_deliveries",
           "move_domain"}

_DATETIME_ARGS = {"dt", "start", "end", "when"}


def _reply(body, status=200) -> Response:
    def default(value):
        return value.isoformat() if isinstance(value, datetime) else str(value)
    return Response(json.dumps(body, ensure_ascii=False, default=default), status=status,
                    content_type="application/json; charset=utf-8")


def handle_ctl(portal, request: Request, name: str) -> Response:
    name = name.strip("/").replace("-", "_")
    if name == "clock" and request.method == "GET":
        return _reply({"now": portal.iso(), "tz": portal.tz_name})
    if name == "state" and request.method == "GET":
        with portal.lock:
            return _reply({"url": portal.base_url, "domain": portal.domain, "member_id": portal.member_id,
                           "now": portal.iso(), "app": {k: v for k, v in (portal.app or {}).items()
                                                        if k != "client_secret"} or None,
                           "counts": {e: len(r) for e, r in portal.records.items()} |
                           {"activities": len(portal.activities), "users": len(portal.users)},
                           "limits": {"enabled": portal.limits_enabled, "rps": portal.rps, "burst": portal.burst,
                                      "operating_limit": portal.operating_limit}})
    if name in READERS and request.method == "GET":
        since = int(request.args.get("since", 0) or 0)
        with portal.lock:
            value = getattr(portal, name)
            if isinstance(value, list):
                value = value[since:]
            elif isinstance(value, dict):
                value = dict(value)
            return _reply(value)
    if name in ACTIONS and request.method == "POST":
        try:
            kwargs = json.loads(request.get_data() or b"{}")
        except ValueError:
            return _reply({"error": "bad JSON"}, 400)
        for key in _DATETIME_ARGS & set(kwargs):
            kwargs[key] = parse_datetime(kwargs[key], portal.tz)
        if name == "install_finish":
            name = "finish_install"
        try:
            result = getattr(portal, name)(**kwargs)
        except RestError as exc:
            return _reply(exc.body(), exc.status)
        except (TypeError, KeyError, ValueError) as exc:
            return _reply({"error": type(exc).__name__, "error_description": str(exc)}, 400)
        return _reply({"result": result})
    return _reply({"error": "NOT_FOUND", "error_description": f"no control action {name!r}"}, 404)
