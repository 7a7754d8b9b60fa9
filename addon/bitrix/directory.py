"""The portal's people: users, departments and their heads, read with `user.get` and
`department.get` (b24restdocs `api-reference/user/user-get.md`, `api-reference/departments/
department-get.md`). Both page with `start`/`next`; `user.get` returns `ACTIVE` as a boolean and
`UF_DEPARTMENT` as integers, `department.get` an absent head as "0" or nothing."""
from __future__ import annotations

from typing import Any

from addon.bitrix.rest import list_pages
from addon.rules import Org

ACTIVE_VALUES = (True, "Y", "true", 1, "1", None)


def users(client, filter: dict[str, Any] | None = None, limit: int | None = None) -> list[dict]:
    """The rows of `user.get` for a filter (every page)."""
    params = {"FILTER": dict(filter)} if filter else None
    return list(list_pages(client, "user.get", params, limit=limit))


def active_users(client, limit: int | None = None) -> dict[int, dict]:
    """Active users by ID (deactivated ones are simply not here)."""
    return {int(row["ID"]): row for row in users(client, {"ACTIVE": True}, limit)
            if row.get("ACTIVE") in ACTIVE_VALUES}


def employees(client) -> list[dict]:
    """Every employee, active or not (a deactivated manager still owns clients)."""
    return users(client, {"USER_TYPE": "employee"})


def departments(client) -> list[dict]:
    return list(list_pages(client, "department.get"))


def full_name(row: dict | None, user_id: int | None = None) -> str:
    """"Name Last name", or #ID when the portal has no name for the user."""
    name = " ".join(str((row or {}).get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    if name:
        return name
    uid = user_id if user_id is not None else (row or {}).get("ID")
    return f"#{uid}" if uid not in (None, "") else "—"


def names(rows) -> dict[int, str]:
    out: dict[int, str] = {}
    for row in rows:
        try:
            uid = int(row.get("ID"))
        except (TypeError, ValueError):
            continue
        out[uid] = full_name(row, uid)
    return out


def org(client, user_rows: list[dict] | None = None) -> Org:
    """The company structure (departments, their heads, who sits where) for supervisor lookups."""
    if user_rows is None:
        user_rows = list(active_users(client).values())
    return Org.from_rows(departments(client), user_rows)
