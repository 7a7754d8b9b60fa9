"""The Bitrix24 portal clients: the only place that knows REST URLs, envelopes, limits and paging.

Two clients share one way of calling (`_Rest`): the app client (`PortalClient`, the app's stored
token with one bounded refresh, made by `portal_client`) and the user client (`UserClient`, the
token of the user who opened a page, no refresh). Both pace every request through the portal's
pace and back off on the rate limit (503 QUERY_LIMIT_EXCEEDED) and 5xx within a deadline that
fits the caller (a web request gets `WEB_DEADLINE`, then a PortalBusy the page answers with
"try again"). What the docs say about the portal we follow (b24restdocs):
- one REST request may run up to 60 s in the cloud (`settings/performance/limits.md`): the read
  timeout is longer than that;
- the leaky bucket 2/s, 50 deep, 503 QUERY_LIMIT_EXCEEDED; 429 OPERATION_TIME_LIMIT parks the
  method until `operating_reset_at`; 503 OVERLOAD_LIMIT is a manual block: calls stop
  (`limits.md`, `_includes/system-errors.md`);
- a renamed portal answers a redirect to its new domain: we re-POST there with the token and
  keep the new endpoint (a plain redirect-follow turns the POST into a GET and drops `auth`);
- big lists: `start=-1` with an `>ID` window (`settings/performance/huge-data.md`);
- batch: at most 50 commands (`settings/how-to-call-rest-api/batch.md`).

Batches go through fast-bitrix24's `BitrixAsync` as sequential raw `batch` calls, wrapped where the
library falls short: it re-sends any batch after a 5xx or a timeout (srh.py RETRIED_ERRORS), which
repeats writes that may already have been applied, and it loses the body of a 4xx. Our aiohttp
session's status check reads every error body itself and lets the library retry only what is safe
to repeat (the rate limit, which refuses before running anything, and 5xx of read-only batches);
a write batch that timed out or got a 5xx comes back as an uncertain error (`uncertain=True`) for
the outbox to confirm instead of re-sending.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests

from addon.bitrix.errors import (BLOCKED, DEFAULT_PARK_SECONDS, RATE_LIMIT, TEMPORARY, TOKEN_EXPIRED,
                                 MethodParked, PortalAuthError, PortalBlocked, PortalBusy, PortalError,
                                 PortalMoved, error_of)
from addon.bitrix.tokens import access_token, refresh

BATCH_LIMIT = 50
PAGE_SIZE = 50
# connect, read: a cloud portal may take up to 60 s on one request before it gives up itself.
HTTP_TIMEOUT = (5, 65)
MAX_503_RETRIES = 5
# What a web request (page, placement, install event) may spend waiting on a busy portal.
WEB_DEADLINE = 20.0
# OVERLOAD_LIMIT: one probe call an hour tells whether the block was lifted.
BLOCK_PROBE_SECONDS = 3600
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

log = logging.getLogger(__name__)


def is_idempotent(method: str, params: dict | None = None) -> bool:
    """May this call be sent again when its answer was lost (a timeout, a 5xx)?"""
    m = method.lower()
    if m in _READ_METHODS or m.endswith(_READ_SUFFIXES) or m in _REPEATABLE_METHODS or m.endswith(_REPEATABLE_SUFFIXES):
        return True
    # A notification with a TAG replaces its twin (im-notify-system-add.md): the recipient sees one.
    return m.startswith("im.notify") and bool((params or {}).get("TAG"))


@dataclass
class BatchResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, PortalError] = field(default_factory=dict)
    total: dict[str, Any] = field(default_factory=dict)
    next: dict[str, Any] = field(default_factory=dict)
    # Keys whose error is the command's own answer (result_error), not the whole batch's
    # refusal: the portal ran the batch and refused this command.
    own_errors: set[str] = field(default_factory=set)


@dataclass
class ClientStats:
    http_requests: int = 0
    batches: int = 0
    commands: int = 0
    refreshes: int = 0
    retries_503: int = 0
    waited: float = 0.0


# --- per-portal pace ---------------------------------------------------------------------------

class Pace:
    """A token bucket (capacity `burst`, refill `rps`/s) shared by every client of one portal in
    this process. The portal drains 2/s with a burst of 50; we keep below it."""

    def __init__(self, rps: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rps = max(float(rps), 0.01)
        self.burst = max(int(burst), 1)
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one request's worth; sleeps while the bucket is empty. Returns the time waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rps)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                wait = (1 - self._tokens) / self.rps
            self._sleep(wait)
            waited += wait


_paces: dict[str, Pace] = {}
_paces_lock = threading.Lock()


def portal_pace(key: str, rps: float, burst: int) -> Pace:
    with _paces_lock:
        pace = _paces.get(key)
        if pace is None or (pace.rps, pace.burst) != (max(float(rps), 0.01), max(int(burst), 1)):
            pace = _paces[key] = Pace(rps, burst)
        return pace


# --- encoding ----------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """Bitrix24 wants Y/N, not True/False, and an empty string for nothing."""
    if value is True:
        return "Y"
    if value is False:
        return "N"
    if value is None:
        return ""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def batch_command(method: str, params: dict | None) -> str:
    """One `cmd` entry of a batch: the method and its params as a PHP-bracket query string."""
    from fast_bitrix24.utils import http_build_query

    query = http_build_query(_plain(params or {})).rstrip("&")
    return f"{method}?{query}" if query else method


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

class _Rest:
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
                                           json={**_plain(params or {}), "auth": token},
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


# --- the app client ----------------------------------------------------------------------------

class PortalClient(_Rest):
    """A client for one portal with the app's token. Make one per job or request (`portal_client`)."""

    def __init__(self, services, portal_id: int, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, deadline: float | None = None):
        from addon.models import Portal

        self.services = services
        self.portal_id = portal_id
        with services.sessions() as session:
            portal = session.get(Portal, portal_id)
            if portal is None:
                raise PortalError("PORTAL_NOT_FOUND", f"no portal {portal_id}")
            endpoint = portal.client_endpoint
            self.parked: dict[str, float] = {k: float(v) for k, v in (portal.parked_methods or {}).items()}
        super().__init__(endpoint, services.settings, sleep=sleep, clock=clock, deadline=deadline)
        from addon.bitrix.pace import shared_pace

        # The portal's one budget, shared with every other process calling it (addon.bitrix.pace).
        self.pace = shared_pace(services, portal_id)
        self._token: str | None = None
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
        from addon.models import Portal

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
        from addon.db import unit_of_work
        from addon.models import Portal

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
        from addon.db import unit_of_work
        from addon.models import Portal

        super()._moved(new_endpoint)
        with unit_of_work(self.services.sessions) as session:
            portal = session.get(Portal, self.portal_id, with_for_update=True)
            if portal is not None:
                portal.client_endpoint = new_endpoint
                portal.domain = urlsplit(new_endpoint).netloc.lower()
        log.info("portal %s moved to %s", self.portal_id, new_endpoint)

    # -- batches (fast-bitrix24) ----------------------------------------------------------------
    def batch(self, commands: dict[str, tuple[str, dict]], halt: bool = False) -> BatchResult:
        """Run commands, 50 per HTTP call, in sequential batches; each command's result or error is
        kept, so one bad item never loses the others."""
        out = BatchResult()
        pending: dict[str, str] = {}
        blocked = self.parked.get(BLOCK_KEY)
        for key, (method, params) in commands.items():
            until = self.parked.get(method.lower())
            if blocked is not None and blocked > self._clock():
                out.errors[key] = PortalBlocked("blocked by Bitrix24 (OVERLOAD_LIMIT)", method)
            elif until is not None and until > self._clock():
                out.errors[key] = MethodParked(method, until)
            else:
                pending[key] = batch_command(method, params)
        methods = {key: commands[key][0] for key in pending}
        repeatable = {key: is_idempotent(*commands[key]) for key in pending}
        keys = list(pending)
        for start in range(0, len(keys), BATCH_LIMIT):
            chunk = {k: pending[k] for k in keys[start:start + BATCH_LIMIT]}
            self._run_chunk(chunk, methods, all(repeatable[k] for k in chunk), halt, out)
            if halt and out.errors:
                break
            if any(isinstance(e, PortalBlocked) for e in out.errors.values()):
                for k in keys[start + BATCH_LIMIT:]:
                    out.errors[k] = PortalBlocked("blocked by Bitrix24 (OVERLOAD_LIMIT)", methods[k])
                break
        return out

    def _run_chunk(self, chunk: dict[str, str], methods: dict[str, str], idempotent: bool, halt: bool,
                   out: BatchResult, moved: bool = False) -> None:
        import aiohttp

        self._acquire()
        self.stats.batches += 1
        self.stats.commands += len(chunk)
        self.stats.http_requests += 1  # fast-bitrix24's own retries (rate limit, after a refresh) are not seen

        def every(error_for: Callable[[str], PortalError]) -> None:
            for key in chunk:
                out.errors[key] = error_for(methods[key])

        try:
            envelope = _run_async(self._batch_async({"halt": 1 if halt else 0, "cmd": chunk}, idempotent))
        except _Redirected as redirect:
            # The portal changed its domain (settings/how-to-call-rest-api/change-domen.md): the
            # batch ran nowhere; send it once more, POST and body intact, to the new address.
            new_endpoint = endpoint_of_location(redirect.location, "batch")
            if not moved and self._may_follow(new_endpoint):
                self._moved(new_endpoint)
                self._run_chunk(chunk, methods, idempotent, halt, out, moved=True)
            else:
                every(lambda m: PortalMoved(redirect.location, m, redirect.status))
            return
        except _Refused as refused:
            error = refused.error
            if isinstance(error, PortalBlocked):
                self._block(error)
                every(lambda m: PortalBlocked(error.description, m))
            elif isinstance(error, MethodParked):
                parked = {m: self._park(m) for m in set(methods[k] for k in chunk)}
                every(lambda m: parked[m])
            else:
                every(lambda m: _copy(error, m))
            return
        except aiohttp.ClientResponseError as exc:
            every(lambda m: PortalError(f"HTTP_{exc.status}", exc.message, exc.status, m))
            return
        except asyncio.TimeoutError:
            def timed_out(m: str) -> PortalError:
                error = PortalError("READ_TIMEOUT", "no answer within the read timeout", None, m)
                error.uncertain = not idempotent
                return error
            every(timed_out)
            return
        except RuntimeError as exc:  # fast-bitrix24 gave up retrying the rate limit / network errors
            every(lambda m: PortalError("SERVER_UNAVAILABLE", str(exc), 503, m))
            return
        body = envelope.get("result") or {}
        results = body.get("result") or {}
        errors = body.get("result_error") or {}
        out.results.update(results if isinstance(results, dict) else {str(i): r for i, r in enumerate(results)})
        out.total.update(body.get("result_total") or {})
        out.next.update(body.get("result_next") or {})
        for key, err in (errors.items() if isinstance(errors, dict) else enumerate(errors)):
            method = methods.get(str(key), "batch")
            error = error_of(err, None, method)
            if isinstance(error, MethodParked):
                error = self._park(method)
            out.errors[str(key)] = error
            out.own_errors.add(str(key))
        if BLOCK_KEY in self.parked:
            self._note_time("batch", {})

    async def _batch_async(self, params: dict, idempotent: bool) -> dict:
        import aiohttp
        from fast_bitrix24 import BitrixAsync

        logging.getLogger("fast_bitrix24").setLevel(logging.WARNING)
        state = {"calls": 0}

        async def token_func() -> str:
            # First call: the stored token. Later calls come from a 401: refresh once, then give up
            # (the library would otherwise loop on a dead token forever).
            state["calls"] += 1
            if state["calls"] == 1:
                return self._access()
            if state["calls"] > 2:
                raise PortalAuthError("expired_token", "401 again after a refresh", 401, "batch")
            return await asyncio.to_thread(self._refresh, self._access())

        async def check_status(response: aiohttp.ClientResponse) -> None:
            """Decide, with the error body in hand, what the library may retry."""
            if response.status in REDIRECTS:
                raise _Redirected(response.headers.get("Location", ""), response.status)
            if response.status < 400:
                return
            try:
                body = await response.json(content_type=None)
            except (ValueError, aiohttp.ClientError):
                body = None
            error = error_of(body, response.status, "batch") if body is not None else None
            if response.status == 401:
                response.raise_for_status()  # the library's 401 → token_func path (capped above)
            if error is not None and error.kind == RATE_LIMIT and error.code == "QUERY_LIMIT_EXCEEDED":
                response.raise_for_status()  # refused before anything ran: safe to send again
            if response.status >= 500 and idempotent and (error is None or error.kind != BLOCKED):
                response.raise_for_status()  # reads only: the library retries
            if error is None:
                error = PortalError(f"HTTP_{response.status}", response.reason or "", response.status, "batch")
            if response.status >= 500 and error.kind == TEMPORARY:
                error.uncertain = True  # a write batch answered 5xx may have been applied in part
            raise _Refused(error)

        # No read timeout on the session: a timeout there is retried by the library; wait_for's is not.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=HTTP_TIMEOUT[0])
        async with aiohttp.ClientSession(raise_for_status=check_status, timeout=timeout) as http:
            bitrix = BitrixAsync(self.client_endpoint, token_func=token_func, verbose=False, client=http,
                                 request_pool_size=max(int(self.settings.portal_burst), 1),
                                 requests_per_second=float(self.settings.portal_rps))
            bitrix.srh.session = _NoRedirects(http)  # after __init__: its type check wants the session itself
            return await asyncio.wait_for(bitrix.call("batch", params, raw=True), self._read_timeout())

    def get_many(self, method: str, ids, id_param: str = "id") -> dict[int, dict | PortalError]:
        """`method` (a *.get) for every ID, batched 50 per call; a missing one maps to its error."""
        ids = [int(i) for i in dict.fromkeys(ids)]
        answer = self.batch({str(i): (method, {id_param: i}) for i in ids})
        out: dict[int, dict | PortalError] = {}
        for i in ids:
            key = str(i)
            if key in answer.results:
                out[i] = answer.results[key]
            else:
                out[i] = answer.errors.get(key) or PortalError("NO_RESULT", "", None, method)
        return out

    def __enter__(self) -> "PortalClient":
        return self


class _NoRedirects:
    """The aiohttp session as fast-bitrix24 sees it, with redirects off: aiohttp follows a 302 to
    a POST as a GET without the body (the batch would run empty at the new address), so the
    redirect comes back to check_status and the chunk is sent again as it was."""

    def __init__(self, session):
        self._session = session

    def post(self, *args, **kwargs):
        return self._session.post(*args, allow_redirects=False, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


class _Redirected(Exception):
    def __init__(self, location: str, status: int):
        super().__init__(f"{status} to {location}")
        self.location = location
        self.status = status


class _Refused(Exception):
    """An HTTP error of a batch the library must not retry, with the portal's own error."""

    def __init__(self, error: PortalError):
        super().__init__(str(error))
        self.error = error


def _copy(error: PortalError, method: str) -> PortalError:
    copy = type(error)(error.code, error.description, error.http_status, method) \
        if type(error) in (PortalError, PortalAuthError, PortalBusy) else error
    copy.uncertain = getattr(error, "uncertain", False)
    return copy


def blocked_until(session, portal_id: int) -> float | None:
    """The unix time of the next probe while Bitrix24 blocks the portal (OVERLOAD_LIMIT), else None."""
    from addon.models import Portal

    portal = session.get(Portal, portal_id)
    until = (portal.parked_methods or {}).get(BLOCK_KEY) if portal is not None else None
    return float(until) if until else None


def portal_client(services, portal_id: int, *, web: bool = False, **kw) -> PortalClient:
    """The app client of a portal. `web=True` for a web request: back-off stops at WEB_DEADLINE
    with PortalBusy (the page says "try again") instead of waiting as long as a job may."""
    if web:
        kw.setdefault("deadline", WEB_DEADLINE)
    return PortalClient(services, portal_id, **kw)


def _run_async(coroutine):
    """Run a coroutine on a private loop. Unlike asyncio.run this leaves the thread's current
    event loop alone (a caller's loop, or one fast-bitrix24's sync wrapper set, stays theirs).
    Called from a thread whose loop is running (an async caller), it runs in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_private_loop(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nezabyt-batch") as pool:
        return pool.submit(_run_on_private_loop, coroutine).result()


def _run_on_private_loop(coroutine):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


# --- the user client ---------------------------------------------------------------------------

class UserClient(_Rest):
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
    from addon.config import Settings

    return Settings(database_url="", secret_key="")

