"""The portal's employees as the pages name and pick them: fetched from `user.get`, kept for a
few minutes per app."""
from __future__ import annotations

import time
from dataclasses import dataclass

from addon.bitrix import directory as bitrix_directory
from addon.bitrix.client import portal_client
from addon.bitrix.errors import PortalError
from settings_ui.blueprint import pages
from settings_ui.i18n import translator

USERS_TTL = 300.0  # seconds the portal's user list is reused for pickers and names


@dataclass(frozen=True)
class Employee:
    name: str
    active: bool = True


def fetch_users(services, portal_id: int) -> dict[int, Employee]:
    """Every employee from `user.get` (without an ACTIVE filter it lists departed ones too, the
    first 5,000); an unreachable portal gives no names."""
    users: dict[int, Employee] = {}
    try:
        with portal_client(services, portal_id, web=True) as client:
            for u in bitrix_directory.users(client, limit=5000):
                name = bitrix_directory.full_name(u)
                users[int(u["ID"])] = Employee(name, u.get("ACTIVE") not in (False, "N", "false", 0, "0"))
    except PortalError:
        return {}
    return users


def directory(portal_id: int) -> dict[int, Employee]:
    """The portal's employees, fetched again once USERS_TTL has passed."""
    state = pages()
    cached = state.users.get(portal_id)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    users = fetch_users(state.services, portal_id)
    state.users[portal_id] = (time.monotonic() + USERS_TTL, users)
    return users


def portal_users(portal_id: int, lang: str = "ru") -> dict[int, str]:
    """{user ID: name} of every employee the portal knows (cached): a departed manager's clients
    are still named by who had them, marked «уволен»."""
    departed = translator(lang)("departed")
    return {uid: e.name if e.active else f"{e.name} ({departed})" for uid, e in directory(portal_id).items()}


def active_users(portal_id: int) -> dict[int, str]:
    """The employees who can be picked (transfer, pool, absences): active ones only."""
    return {uid: e.name for uid, e in directory(portal_id).items() if e.active}
