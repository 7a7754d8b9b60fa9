"""The one `settings_ui` blueprint every page's routes attach to, and the state each app keeps for
it in `app.extensions` (services, page tokens, clock, the portal's user list)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Blueprint, current_app

from settings_ui.access import PageTokens

EXTENSION = "settings_ui"  # the app.extensions key of the pages' state

bp = Blueprint("settings_ui", __name__, template_folder="templates", static_folder="static",
               static_url_path="/ui/static")


@dataclass
class Pages:
    """What the pages of one app share: `clock` (unix seconds) dates page tokens, so a test can age one."""
    services: Any
    tokens: PageTokens
    clock: Callable[[], float]
    users: dict[int, tuple[float, dict]] = field(default_factory=dict)  # portal ID -> (expires, employees)


def pages() -> Pages:
    """The pages' state of the app serving this request."""
    return current_app.extensions[EXTENSION]


def now() -> dt.datetime:
    """The pages' clock as a naive-UTC instant."""
    return dt.datetime.fromtimestamp(pages().clock(), dt.timezone.utc).replace(tzinfo=None)
