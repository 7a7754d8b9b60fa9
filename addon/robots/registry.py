"""The robots Nezabyt has, in one list: the install manifest registers them (`robot_definitions`),
the web's receiver takes calls only for their codes (`parse_robot_code`), and the runner hands each
call to its robot's `handle` and each due timer to the robot's timer (`HANDLERS`, `TIMER_HANDLERS`).

A robot is one module: its declaration (`ROBOT`: name, description, properties, return values),
`handle(run, call, item)` for a call, and `TIMERS` (timer robot name -> fire(run, timer)) if it waits."""
from __future__ import annotations

from typing import Any, Callable

from addon.robots import (appointment_reminder, call_cadence, close_reason, distribute, one_client_per_phone,
                          ranking_stage, required_fields, stage_gate, stuck_in_stage, take_in_work)
from addon.robots.robot import CODE_PREFIX, DOCUMENT_TYPES, Robot, robot_code

# The order is the order of registration and of the settings page's catalog.
MODULES = (distribute, take_in_work, one_client_per_phone, required_fields, close_reason, call_cadence,
           appointment_reminder, ranking_stage, stage_gate, stuck_in_stage)

ROBOTS: tuple[Robot, ...] = tuple(m.ROBOT for m in MODULES)
ROBOTS_BY_KEY = {r.key: r for r in ROBOTS}
HANDLERS: dict[str, Callable] = {m.ROBOT.key: m.handle for m in MODULES}
TIMER_HANDLERS: dict[str, Callable] = {name: fire for m in MODULES
                                       for name, fire in getattr(m, "TIMERS", {}).items()}


def parse_robot_code(code: str) -> tuple[str, str] | None:
    """(robot key, document type) of one of our codes, or None for a code we never registered."""
    if not code.startswith(CODE_PREFIX):
        return None
    rest = code[len(CODE_PREFIX):]
    key, _, document_type = rest.rpartition("_")
    if key in ROBOTS_BY_KEY and document_type in DOCUMENT_TYPES:
        return key, document_type
    return None


def robot_definitions(public_url: str, auth_user_id: int | None = None) -> list[dict[str, Any]]:
    """The `bizproc.robot.add` params of every robot for every document type. Each twin carries a
    FILTER that INCLUDEs only its document type (bizproc-robot-add.md), so a designer offers one
    robot of each name, the one whose CODE matches it. `auth_user_id`: whose token the robot's
    calls carry — the admin who installed the app (user 1 may not exist or not be an admin)."""
    base = public_url.rstrip("/")
    result = []
    for document_type, document in DOCUMENT_TYPES.items():
        for robot in ROBOTS:
            code = robot_code(robot.key, document_type)
            params: dict[str, Any] = {
                "CODE": code,
                "HANDLER": f"{base}/robots/{code}",
                "AUTH_USER_ID": int(auth_user_id or 1),
                "NAME": dict(robot.name),
                "DESCRIPTION": dict(robot.description),
                "DOCUMENT_TYPE": list(document),
                "FILTER": {"INCLUDE": [list(document[:2])]},
                "PROPERTIES": {k: dict(v) for k, v in robot.properties.items()},
                # The workflow waits for the reply only where the robot returns values.
                "USE_SUBSCRIPTION": "Y" if robot.return_properties else "N",
            }
            if robot.return_properties:
                params["RETURN_PROPERTIES"] = {k: dict(v) for k, v in robot.return_properties.items()}
            result.append(params)
    return result
