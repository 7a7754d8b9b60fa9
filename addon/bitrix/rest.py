"""The synchronous way of calling a portal (requests): paced POSTs, back-off within a deadline, typed
errors, redirects to a renamed portal, and the list walks over it. What the docs say we follow (b24restdocs):
- one REST request may run up to 60 s in the cloud (`settings/performance/limits.md`): the read
  timeout is longer than that;
- the leaky bucket 2/s, 50 deep, 503 QUERY_LIMIT_EXCEEDED; 429 OPERATION_TIME_LIMIT parks the
  method until `operating_reset_at`; 503 OVERLOAD_LIMIT is a manual block: calls stop
  (`limits.md`, `_includes/system-errors.md`);
- a renamed portal answers a redirect to its new domain: we re-POST there with the token and
  keep the new endpoint (a plain redirect-follow turns the POST into a GET and drops `auth`);
- big lists: `start=-1` with an `>ID` window (`settings/performance/huge-data.md`).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests

from addon.bitrix.bucket import portal_pace
from addon.bitrix.errors import (DEFAULT_PARK_SECONDS, RATE_LIMIT, TEMPORARY, TOKEN_EXPIRED, MethodParked,
                                 PortalAuthError, PortalBlocked, PortalBusy, PortalError, PortalMoved, error_of)

PAGE_SIZE = 50
# connect, read: a cloud portal may take up to 60 s on one request before it gives up itself.
HTTP_TIMEOUT = (5, 65)
MAX_503_RETRIES = 5
# The key of the whole-portal block among the parked methods (no method is called "*").
BLOCK_KEY = "*"
REDIRECTS = (301, 302, 303, 307, 308)

# Methods that change nothing: repeating one after a 5xx or a timeout is harmless.
_READ_SUFFIXES = (".get", ".list", ".fields", ".current", ".findbycomm", ".count")
_READ_METHODS = {"profile", "app.info", "scope", "server.time", "methods", "batch.read", "event.get",
                 "placement.get", "bizproc.robot.list", "feature.get"}
# Writes that come out the same when repeated (they set a value, or Bitrix24 refuses the twin).
_REPEATABLE_SUFFIXES = (".update", ".unbind", ".delete")
_REPEATABLE_METHODS = {"app.option.set", "user.option.set", "event.bind", "bizproc.event.send"}


def is_idempotent(method: str, params: dict | None = None) -> bool:
    """May this call be sent again when its answer was lost (a timeout, a 5xx)?"""
    m = method.lower()
    if m in _READ_METHODS or m.endswith(_READ_SUFFIXES) or m in _REPEATABLE_METHODS or m.endswith(_REPEATABLE_SUFFIXES):
        return True
    # A notification with a TAG replaces its twin (im-notify-system-add.md): the recipient sees one.
    return m.startswith("im.notify") and bool((params or {}).get("TAG"))


@dataclass
class ClientStats:
    http_requests: int = 0
    batches: int = 0
    commands: int = 0
    refreshes: int = 0
    retries_503: int = 0
    waited: float = 0.0


# --- encoding ----------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """Bitrix24 wants Y/N, not True/False, and an empty string for nothing."""
    if value is True:
        return "Y"
    if value is False:
        return "N"
    if value is None:
        return ""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def endpoint_of_location(location: str, method: str) -> str | None:
    """The REST base a redirect points at: `https://new.example/rest/crm.contact.get.json` →
    `https://new.example/rest/`."""
    parts = urlsplit(location or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    path = parts.path
    marker = path.lower().rfind("/rest/")
    base = path[:marker + len("/rest/")] if marker >= 0 else "/rest/"
    return f"{parts.scheme}://{parts.netloc}{base}"


# --- the way of calling, shared by both clients ------------------------------------------------

class Rest:
    """One portal's REST endpoint: paced requests, back-off within a deadline, typed errors."""

    # The app client follows its portal to a new domain; the user client never does (below).
    follow_moves = True

    def __init__(self, client_endpoint: str, settings, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, deadline: float | None = None):
        self.client_endpoint = client_endpoint.rstrip("/") + "/"
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self.deadline = deadline
        self._started = time.monotonic()
        self.stats = ClientStats()
        self.pace = portal_pace(self.client_endpoint, settings.portal_rps, settings.portal_burst)
        self._http = requests.Session()
        # Clients are made per job or request and often not closed explicitly: close the pool with them.
        weakref.finalize(self, self._http.close)

    # -- hooks of the app client ------------------------------------------------------------------
    def _access(self) -> str:
        raise NotImplementedError

    def _refresh(self, stale: str) -> str | None:
        return None  # the user client cannot refresh

    def _check_parked(self, method: str) -> None:
        return None

    def _park(self, method: str) -> MethodParked:
        return MethodParked(method, self._clock() + DEFAULT_PARK_SECONDS)

    def _block(self, error: PortalBlocked) -> PortalBlocked:
        return error

    def _note_time(self, method: str, envelope: dict) -> None:
        return None

    def _moved(self, new_endpoint: str) -> None:
        self.client_endpoint = new_endpoint

    def _may_follow(self, new_endpoint: str | None) -> bool:
        """A portal's new address is followed, never from https down to plain http (the token would
        travel in clear)."""
        return bool(new_endpoint) and new_endpoint != self.client_endpoint and not (
            self.client_endpoint.lower().startswith("https:") and not new_endpoint.lower().startswith("https:"))

    # -- time ---------------------------------------------------------------------------------------
    def _spent(self) -> float:
        return max(time.monotonic() - self._started, self.stats.waited)

    def _may_wait(self, seconds: float) -> bool:
        return self.deadline is None or self._spent() + seconds <= self.deadline

    def _wait(self, seconds: float) -> None:
        self.stats.waited += seconds
        self._sleep(seconds)

    def _acquire(self) -> None:
        self.stats.waited += self.pace.acquire()

    def _read_timeout(self) -> float:
        if self.deadline is None:
            return HTTP_TIMEOUT[1]
        return max(1.0, min(HTTP_TIMEOUT[1], self.deadline - self._spent()))

    def _busy(self, error: PortalError) -> PortalError:
        """The error a caller with a deadline sees when the portal kept refusing."""
        if self.deadline is None:
            return error
        busy = PortalBusy(error.code, error.description or "the portal is busy", error.http_status, error.method)
        busy.__cause__ = error
        return busy

    # -- single calls ---------------------------------------------------------------------------
    def call_envelope(self, method: str, params: dict | None = None) -> dict:
        """The whole success envelope (result, total, next, time); raises a typed PortalError."""
        self._check_parked(method)
        token = self._access()
        idempotent = is_idempotent(method, params)
        refreshed = moved = False
        attempt = 0
        while True:
            self._acquire()
            self.stats.http_requests += 1
            try:
                response = self._http.post(f"{self.client_endpoint}{method}.json",
                                           json={**plain(params or {}), "auth": token},
                                           timeout=(HTTP_TIMEOUT[0], self._read_timeout()), allow_redirects=False)
            except requests.ReadTimeout as exc:
                error = PortalError("READ_TIMEOUT", str(exc), None, method)
                if not idempotent:
                    error.uncertain = True  # the portal may have done it: not ours to repeat blindly
                    raise error from exc
                if attempt < MAX_503_RETRIES and self._may_wait(0.5 * 2 ** attempt):
                    self._wait(0.5 * 2 ** attempt)
                    attempt += 1
                    continue
                raise self._busy(error) from exc
            except requests.RequestException as exc:
                raise PortalError("NETWORK_ERROR", str(exc), None, method) from exc
            if response.status_code in REDIRECTS and not moved and self.follow_moves:
                new_endpoint = endpoint_of_location(response.headers.get("Location", ""), method)
                if self._may_follow(new_endpoint):
                    # The portal changed its domain: ask again there, with the token.
                    moved = True
                    self._moved(new_endpoint)
                    continue
            try:
                body = response.json()
            except ValueError:
                body = response.text
            if response.status_code == 200 and isinstance(body, dict) and "error" not in body:
                self._note_time(method, body)
                return body
            if response.status_code in REDIRECTS:
                raise PortalMoved(response.headers.get("Location", ""), method, response.status_code)
            error = error_of(body, response.status_code, method)
            kind = error.kind
            if kind == TOKEN_EXPIRED and not refreshed:
                fresh = self._refresh(token)
                if fresh is not None:
                    refreshed, token = True, fresh
                    continue
            if isinstance(error, PortalBlocked):
                raise self._block(error)
            if isinstance(error, MethodParked):
                raise self._park(method) from error
            retry = kind == RATE_LIMIT or (kind == TEMPORARY and response.status_code >= 500 and idempotent)
            if retry:
                delay = 0.5 * 2 ** attempt
                if attempt < MAX_503_RETRIES and self._may_wait(delay):
                    # QUERY_LIMIT_EXCEEDED or a storm: back off (0.5, 1, 2, 4, 8 s) and retry.
                    self.stats.retries_503 += 1
                    if error.code == "QUERY_LIMIT_EXCEEDED" and hasattr(self.pace, "limited"):
                        self.pace.limited()
                    self._wait(delay)
                    attempt += 1
                    continue
                raise self._busy(error)
            if kind == TEMPORARY and response.status_code >= 500:
                error.uncertain = True  # a write answered 5xx may have been applied
            if response.status_code == 401 and not isinstance(error, PortalAuthError):
                raise PortalAuthError(error.code, error.description, 401, method)
            raise error

    def call(self, method: str, params: dict | None = None) -> Any:
        return self.call_envelope(method, params).get("result")

    # -- reading many ---------------------------------------------------------------------------
    def list_all(self, method: str, filter: dict | None = None, select: list[str] | None = None,
                 id_key: str = "ID", items_key: str | None = None, extra: dict | None = None) -> Iterator[dict]:
        return list_all(self, method, filter, select, id_key, items_key, extra)

    def list_pages(self, method: str, params: dict | None = None, limit: int | None = None) -> Iterator[dict]:
        return list_pages(self, method, params, limit)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- reading many (any client with call/call_envelope) -------------------------------------

def list_all(client, method: str, filter: dict | None = None, select: list[str] | None = None,
             id_key: str = "ID", items_key: str | None = None, extra: dict | None = None) -> Iterator[dict]:
    """Every row of a list method: an ID window (`>ID`, order ID ASC, start=-1) so the portal
    never counts the total (settings/performance/huge-data.md). `items_key` reads
    `result[items_key]` (crm.item.list: "items")."""
    last = 0
    base_filter = dict(filter or {})
    while True:
        params: dict[str, Any] = {**(extra or {}), "filter": {**base_filter, f">{id_key}": last},
                                  "order": {id_key: "ASC"}, "start": -1}
        if select:
            params["select"] = list(select)
        result = client.call(method, params)
        rows = result.get(items_key, []) if items_key and isinstance(result, dict) else result
        if isinstance(rows, dict):
            rows = list(rows.values())
        for row in rows or []:
            yield row
        if not rows or len(rows) < PAGE_SIZE:
            return
        last = int(rows[-1][id_key])


def list_pages(client, method: str, params: dict | None = None, limit: int | None = None) -> Iterator[dict]:
    """Every row of a small list that pages with `start`/`next` (user.get, department.get:
    list-methods-pecularities.md); `limit` stops after that many rows."""
    start = 0
    seen = 0
    while True:
        envelope = client.call_envelope(method, {**(params or {}), "start": start})
        rows = envelope.get("result") or []
        for row in rows:
            yield row
            seen += 1
            if limit is not None and seen >= limit:
                return
        nxt = envelope.get("next")
        if not nxt or not rows:
            return
        start = int(nxt)
