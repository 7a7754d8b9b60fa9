"""Registers the settings UI on an app: the blueprint with every page's routes, and the state they
share (`register_pages`)."""
from __future__ import annotations

import time
from typing import Callable

from flask import Flask

from settings_ui import entry, import_tab, index_tab, journal_tab, page_auth, robots_tab, settings_tab
from settings_ui.access import PageTokens
from settings_ui.blueprint import EXTENSION, Pages, bp

# Importing a module attaches its routes and handlers to `bp`: all of them before it is registered.
ROUTE_MODULES = (page_auth, entry, settings_tab, index_tab, import_tab, journal_tab, robots_tab)


def page_clock() -> float:
    """Unix seconds that date page tokens when no clock is given (a browser test moves it)."""
    return time.time()


def register_pages(app: Flask, services, clock: Callable[[], float] | None = None) -> None:
    """The settings UI on `app`. `clock` (unix seconds) dates page tokens, so a test can age one."""
    clock = clock or (lambda: page_clock())  # looked up at each call, so it can be moved
    app.extensions[EXTENSION] = Pages(services, PageTokens(services.settings.secret_key, clock=clock), clock)
    app.register_blueprint(bp)
