"""The Bitrix24 portal clients: the app client (`PortalClient`, the app's stored token with one bounded
refresh, made by `portal_client`) and the user client (`UserClient`, the token of the user who opened a page,
no refresh).

Both call through addon.bitrix.rest: they pace every request through the portal's pace and back off on the
rate limit (503 QUERY_LIMIT_EXCEEDED) and 5xx within a deadline that fits the caller (a web request gets
`WEB_DEADLINE`, then a PortalBusy the page answers with "try again"). The app client also parks methods,
stops on a portal block, follows a renamed portal and runs batches (addon.bitrix.batch).
"""
from __future__ import annotations

import logging
import time
from typing import Callable
from urllib.parse import urlsplit

from addon.bitrix.batch import BatchCalls
from addon.bitrix.errors import DEFAULT_PARK_SECONDS, MethodParked, PortalBlocked, PortalError
from addon.bitrix.pace import shared_pace
from addon.bitrix.rest import BLOCK_KEY, Rest
from addon.bitrix.tokens import access_token, refresh, usable_token
from addon.config import Settings
from addon.db import unit_of_work
from addon.models import Portal

# What a web request (page, placement, install event) may spend waiting on a busy portal.
WEB_DEADLINE = 20.0
# OVERLOAD_LIMIT: one probe call an hour tells whether the block was lifted.
BLOCK_PROBE_SECONDS = 3600

log = logging.getLogger(__name__)


class PortalClient(BatchCalls, Rest):
    """A client for one portal with the app's token. Make one per job or request (`portal_client`)."""

    def __init__(self, services, portal_id: int, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, deadline: float | None = None):
        self.services = services
        self.portal_id = portal_id
        with services.sessions() as session:
            portal = session.get(Portal, portal_id)
            if portal is None:
                raise PortalError("PORTAL_NOT_FOUND", f"no portal {portal_id}")
            endpoint = portal.client_endpoint
            self.parked: dict[str, float] = {k: float(v) for k, v in (portal.parked_methods or {}).items()}
            # The token from the same read (one statement fewer per unit of work); None: read at first use.
            token = usable_token(services, portal)
        super().__init__(endpoint, services.settings, sleep=sleep, clock=clock, deadline=deadline)
        # The portal's one budget, shared with every other process calling it (addon.bitrix.pace).
        self.pace = shared_pace(services, portal_id)
        self._token: str | None = token
        # operating_reset_at last reported per method, used when a 429 arrives without it.
        self._reset_at: dict[str, float] = {}

    # -- tokens ---------------------------------------------------------------------------------
    def _access(self) -> str:
        if self._token is None:
            self._token = access_token(self.services, self.portal_id)
        return self._token

    def _refresh(self, stale: str) -> str:
        self._token = refresh(self.services, self.portal_id, stale)
        self.stats.refreshes += 1
        self._follow_stored_endpoint()
        return self._token

    def _follow_stored_endpoint(self) -> None:
        """A refresh answers the portal's current client_endpoint (tokens store it): use it."""
        with self.services.sessions() as session:
            portal = session.get(Portal, self.portal_id)
            if portal is not None and portal.client_endpoint:
                self.client_endpoint = portal.client_endpoint.rstrip("/") + "/"

    # -- parking and blocks ---------------------------------------------------------------------
    def _check_parked(self, method: str) -> None:
        until = self.parked.get(BLOCK_KEY)
        if until is not None and until > self._clock():
            raise PortalBlocked(f"blocked by Bitrix24 (OVERLOAD_LIMIT); next probe after {int(until)}", method)
        until = self.parked.get(method.lower())
        if until is not None and until > self._clock():
            raise MethodParked(method, until)

    def _store_parked(self, key: str, until: float | None) -> None:
        with unit_of_work(self.services.sessions) as session:
            portal = session.get(Portal, self.portal_id, with_for_update=True)
            if portal is not None:
                parked = dict(portal.parked_methods or {})
                if until is None:
                    parked.pop(key, None)
                else:
                    parked[key] = until
                if parked != (portal.parked_methods or {}):
                    portal.parked_methods = parked  # a new dict, so the JSON column is seen as changed

    def _park(self, method: str) -> MethodParked:
        until = self._reset_at.get(method.lower()) or 0
        if until <= self._clock():
            until = self._clock() + DEFAULT_PARK_SECONDS
        self.parked[method.lower()] = until
        self._store_parked(method.lower(), until)
        return MethodParked(method, until)

    def _block(self, error: PortalBlocked) -> PortalBlocked:
        """OVERLOAD_LIMIT: every client of this portal (web and worker) stops calling it; one probe
        an hour finds out when the block is lifted."""
        until = self._clock() + BLOCK_PROBE_SECONDS
        self.parked[BLOCK_KEY] = until
        self._store_parked(BLOCK_KEY, until)
        log.warning("portal %s: REST API blocked by Bitrix24 (OVERLOAD_LIMIT): %s", self.portal_id, error.description)
        return error

    def _note_time(self, method: str, envelope: dict) -> None:
        if BLOCK_KEY in self.parked:  # the probe went through: the block is lifted
            self.parked.pop(BLOCK_KEY, None)
            self._store_parked(BLOCK_KEY, None)
        reset = (envelope.get("time") or {}).get("operating_reset_at")
        if reset:
            self._reset_at[method.lower()] = float(reset)

    def _moved(self, new_endpoint: str) -> None:
        """The portal's domain changed: keep the new endpoint for every later client."""
        super()._moved(new_endpoint)
        with unit_of_work(self.services.sessions) as session:
            portal = session.get(Portal, self.portal_id, with_for_update=True)
            if portal is not None:
                portal.client_endpoint = new_endpoint
                portal.domain = urlsplit(new_endpoint).netloc.lower()
        log.info("portal %s moved to %s", self.portal_id, new_endpoint)

    def __enter__(self) -> "PortalClient":
        return self


def blocked_until(session, portal_id: int) -> float | None:
    """The unix time of the next probe while Bitrix24 blocks the portal (OVERLOAD_LIMIT), else None."""
    portal = session.get(Portal, portal_id)
    until = (portal.parked_methods or {}).get(BLOCK_KEY) if portal is not None else None
    return float(until) if until else None


def portal_client(services, portal_id: int, *, web: bool = False, **kw) -> PortalClient:
    """The app client of a portal. `web=True` for a web request: back-off stops at WEB_DEADLINE
    with PortalBusy (the page says "try again") instead of waiting as long as a job may."""
    if web:
        kw.setdefault("deadline", WEB_DEADLINE)
    return PortalClient(services, portal_id, **kw)


# --- the user client ---------------------------------------------------------------------------

class UserClient(Rest):
    """Call-only client with a USER's token (installer, settings access check, first-token
    adoption): no refresh, the portal's pace, back-off within a web request's deadline. No
    redirects: a user token is checked at the address it came with, and a redirect could steer the
    call (and the token) to an address nobody checked (a PortalMoved error instead)."""

    follow_moves = False

    def __init__(self, client_endpoint: str, access_token: str, settings=None, *,
                 sleep: Callable[[float], None] = time.sleep, deadline: float | None | str = "web",
                 pace=None):
        # Its callers are web requests: unless told otherwise, WEB_DEADLINE as it is now.
        super().__init__(client_endpoint, settings or _default_settings(), sleep=sleep,
                         deadline=WEB_DEADLINE if deadline == "web" else deadline)
        self._token = access_token
        if pace is not None:
            # A known portal's one budget (addon.bitrix.pace.shared_pace): a user's calls from the web
            # draw on the same bucket as the worker's, or the two together overrun the portal.
            self.pace = pace

    def _access(self) -> str:
        return self._token


def user_client(client_endpoint: str, access_token: str, settings=None, **kw) -> UserClient:
    return UserClient(client_endpoint, access_token, settings, **kw)


def _default_settings():
    return Settings(database_url="", secret_key="")
