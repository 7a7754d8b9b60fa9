"""The Bitrix24 portal client: the only place that knows REST URLs, envelopes and error codes.

Single calls go through `requests` (typed errors with the body kept, one bounded refresh, bounded
503 back-off). Batches go through fast-bitrix24's `BitrixAsync` as sequential raw `batch` calls
(its retries of 5xx and its 401 → token hook), with the workarounds the library needs: a capped
token hook, progress bars off, its logger at WARNING, our own aiohttp session with a timeout.
Every HTTP request of a portal, from any client in any of our processes, passes the portal's one
shared pace (addon.bitrix.pace) so all our work together stays under the portal's leaky bucket.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import requests

BATCH_LIMIT = 50
PAGE_SIZE = 50
# What a 429 parks a method for when the portal did not tell us its operating_reset_at.
DEFAULT_PARK_SECONDS = 600
HTTP_TIMEOUT = (5, 30)
MAX_503_RETRIES = 5

log = logging.getLogger(__name__)


class PortalError(Exception):
    """An error answered by the portal (or the way to it), with Bitrix24's own code."""

    def __init__(self, code: str, description: str = "", http_status: int | None = None,
                 method: str | None = None):
        super().__init__(f"{method or '?'}: {code or '(no code)'} {description}".strip())
        self.code = code
        self.description = description
        self.http_status = http_status
        self.method = method


class PortalAuthError(PortalError):
    """The portal's tokens are dead (refresh refused) or the portal needs re-authorization."""


class MethodParked(PortalError):
    """429 OPERATION_TIME_LIMIT: the method is parked for this portal until `until` (unix time)."""

    def __init__(self, method: str, until: float, description: str = ""):
        super().__init__("OPERATION_TIME_LIMIT", description or f"parked until {int(until)}", 429, method)
        self.until = until


@dataclass
class BatchResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, PortalError] = field(default_factory=dict)
    total: dict[str, Any] = field(default_factory=dict)
    next: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClientStats:
    http_requests: int = 0
    batches: int = 0
    commands: int = 0
    refreshes: int = 0
    retries_503: int = 0


# --- per-portal pace ---------------------------------------------------------------------------

class Pace:
    """A token bucket (capacity `burst`, refill `rps`/s) in this process only: the shared pace's
    fallback when its database row cannot be reached (addon.bitrix.pace)."""

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


def _error_of(body: Any, http_status: int | None, method: str) -> PortalError:
    if isinstance(body, dict):
        code = str(body.get("error", ""))
        description = str(body.get("error_description", ""))
    else:
        code, description = f"HTTP_{http_status}", str(body)[:200]
    if code == "OPERATION_TIME_LIMIT":
        return MethodParked(method, time.time() + DEFAULT_PARK_SECONDS, description)
    return PortalError(code, description, http_status, method)


# --- the client --------------------------------------------------------------------------------

class PortalClient:
    """A client for one portal with the app's token. Make one per job or request."""

    def __init__(self, services, portal_id: int, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time):
        from addon.models import Portal

        self.services = services
        self.portal_id = portal_id
        self._sleep = sleep
        self._clock = clock
        with services.sessions() as session:
            portal = session.get(Portal, portal_id)
            if portal is None:
                raise PortalError("PORTAL_NOT_FOUND", f"no portal {portal_id}")
            self.client_endpoint = portal.client_endpoint.rstrip("/") + "/"
            self.parked: dict[str, float] = {k: float(v) for k, v in (portal.parked_methods or {}).items()}
        from addon.bitrix.pace import shared_pace

        # The portal's one budget, shared with every other process calling it (addon.bitrix.pace).
        self.pace = shared_pace(services, portal_id)
        self.stats = ClientStats()
        self._token: str | None = None
        self._http = requests.Session()
        # Clients are made per job or request and often not closed explicitly: close the pool with them.
        weakref.finalize(self, self._http.close)
        # operating_reset_at last reported per method, used when a 429 arrives without it.
        self._reset_at: dict[str, float] = {}

    # -- tokens ---------------------------------------------------------------------------------
    def _access(self) -> str:
        if self._token is None:
            from install.tokens import access_token

            self._token = access_token(self.services, self.portal_id)
        return self._token

    def _refresh(self, stale: str) -> str:
        from install.tokens import refresh

        self._token = refresh(self.services, self.portal_id, stale)
        self.stats.refreshes += 1
        return self._token

    # -- parking --------------------------------------------------------------------------------
    def _check_parked(self, method: str) -> None:
        until = self.parked.get(method.lower())
        if until is not None and until > self._clock():
            raise MethodParked(method, until)

    def _park(self, method: str) -> MethodParked:
        until = self._reset_at.get(method.lower()) or 0
        if until <= self._clock():
            until = self._clock() + DEFAULT_PARK_SECONDS
        self.parked[method.lower()] = until
        from addon.db import unit_of_work
        from addon.models import Portal

        with unit_of_work(self.services.sessions) as session:
            portal = session.get(Portal, self.portal_id, with_for_update=True)
            if portal is not None:
                parked = dict(portal.parked_methods or {})
                parked[method.lower()] = until
                portal.parked_methods = parked  # a new dict, so the JSON column is seen as changed
        return MethodParked(method, until)

    def _note_time(self, method: str, envelope: dict) -> None:
        reset = (envelope.get("time") or {}).get("operating_reset_at")
        if reset:
            self._reset_at[method.lower()] = float(reset)

    # -- single calls ---------------------------------------------------------------------------
    def call_envelope(self, method: str, params: dict | None = None) -> dict:
        """The whole success envelope (result, total, next, time); raises a typed PortalError."""
        self._check_parked(method)
        token = self._access()
        refreshed = False
        attempt = 0
        while True:
            self.pace.acquire()
            self.stats.http_requests += 1
            try:
                response = self._http.post(f"{self.client_endpoint}{method}.json",
                                           json={**_plain(params or {}), "auth": token}, timeout=HTTP_TIMEOUT)
            except requests.RequestException as exc:
                raise PortalError("NETWORK_ERROR", str(exc), None, method) from exc
            try:
                body = response.json()
            except ValueError:
                body = response.text
            if response.status_code == 200 and isinstance(body, dict) and "error" not in body:
                self._note_time(method, body)
                return body
            error = _error_of(body, response.status_code, method)
            if error.code in ("expired_token", "invalid_token") and not refreshed:
                refreshed = True
                token = self._refresh(token)
                continue
            if response.status_code == 503 and attempt < MAX_503_RETRIES:
                # QUERY_LIMIT_EXCEEDED or a storm: back off (0.5, 1, 2, 4, 8 s) and retry.
                self.stats.retries_503 += 1
                if error.code == "QUERY_LIMIT_EXCEEDED":
                    self.pace.limited()
                self._sleep(0.5 * 2 ** attempt)
                attempt += 1
                continue
            if isinstance(error, MethodParked):
                raise self._park(method) from error
            if response.status_code == 401:
                raise PortalAuthError(error.code, error.description, 401, method)
            raise error

    def call(self, method: str, params: dict | None = None) -> Any:
        return self.call_envelope(method, params).get("result")

    # -- batches (fast-bitrix24) ----------------------------------------------------------------
    def batch(self, commands: dict[str, tuple[str, dict]], halt: bool = False) -> BatchResult:
        """Run commands, 50 per HTTP call, in sequential batches; each command's result or error is
        kept, so one bad item never loses the others."""
        out = BatchResult()
        pending: dict[str, str] = {}
        for key, (method, params) in commands.items():
            until = self.parked.get(method.lower())
            if until is not None and until > self._clock():
                out.errors[key] = MethodParked(method, until)
            else:
                pending[key] = batch_command(method, params)
        methods = {key: commands[key][0] for key in pending}
        keys = list(pending)
        for start in range(0, len(keys), BATCH_LIMIT):
            chunk = {k: pending[k] for k in keys[start:start + BATCH_LIMIT]}
            self._run_chunk(chunk, methods, halt, out)
            if halt and out.errors:
                break
        return out

    def _run_chunk(self, chunk: dict[str, str], methods: dict[str, str], halt: bool, out: BatchResult) -> None:
        import aiohttp

        self.pace.acquire()
        self.stats.batches += 1
        self.stats.commands += len(chunk)
        self.stats.http_requests += 1  # fast-bitrix24's own retries (5xx, after a refresh) are not seen
        try:
            envelope = _run_async(self._batch_async({"halt": 1 if halt else 0, "cmd": chunk}))
        except aiohttp.ClientResponseError as exc:
            # fast-bitrix24 loses 4xx bodies: keep what we know, the HTTP status.
            for key in chunk:
                out.errors[key] = (MethodParked(methods[key], self._clock() + DEFAULT_PARK_SECONDS)
                                   if exc.status == 429 else
                                   PortalError(f"HTTP_{exc.status}", exc.message, exc.status, methods[key]))
            return
        except RuntimeError as exc:  # fast-bitrix24 gave up retrying 5xx / network errors
            for key in chunk:
                out.errors[key] = PortalError("SERVER_UNAVAILABLE", str(exc), 503, methods[key])
            return
        body = envelope.get("result") or {}
        results = body.get("result") or {}
        errors = body.get("result_error") or {}
        out.results.update(results if isinstance(results, dict) else dict(enumerate(results)))
        out.total.update(body.get("result_total") or {})
        out.next.update(body.get("result_next") or {})
        for key, err in (errors.items() if isinstance(errors, dict) else enumerate(errors)):
            method = methods.get(key, "batch")
            error = _error_of(err, None, method)
            if isinstance(error, MethodParked):
                error = self._park(method)
            out.errors[str(key)] = error

    async def _batch_async(self, params: dict) -> dict:
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

        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(raise_for_status=True, timeout=timeout) as http:
            bitrix = BitrixAsync(self.client_endpoint, token_func=token_func, verbose=False, client=http,
                                 request_pool_size=max(int(self.services.settings.portal_burst), 1),
                                 requests_per_second=float(self.services.settings.portal_rps))
            return await bitrix.call("batch", params, raw=True)

    # -- reading many ---------------------------------------------------------------------------
    def list_all(self, method: str, filter: dict | None = None, select: list[str] | None = None,
                 id_key: str = "ID", items_key: str | None = None) -> Iterator[dict]:
        """Every row of a list method: an ID window (`>ID`, order ID ASC, start=-1) so the portal
        never counts the total. `items_key` reads `result[items_key]` (crm.item.list: "items")."""
        last = 0
        base_filter = dict(filter or {})
        while True:
            params: dict[str, Any] = {"filter": {**base_filter, f">{id_key}": last},
                                      "order": {id_key: "ASC"}, "start": -1}
            if select:
                params["select"] = list(select)
            result = self.call(method, params)
            rows = result.get(items_key, []) if items_key else result
            if isinstance(rows, dict):
                rows = list(rows.values())
            for row in rows or []:
                yield row
            if not rows or len(rows) < PAGE_SIZE:
                return
            last = int(rows[-1][id_key])

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

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PortalClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


class UserClient:
    """Call-only client with a USER's token (the settings UI's access check): no refresh."""

    def __init__(self, client_endpoint: str, access_token: str):
        self.client_endpoint = client_endpoint.rstrip("/") + "/"
        self._token = access_token

    def call_envelope(self, method: str, params: dict | None = None) -> dict:
        try:
            # No redirects: a user token is checked at the address it came with, and a redirect
            # could steer the call (and the token) to an address nobody checked.
            response = requests.post(f"{self.client_endpoint}{method}.json",
                                     json={**_plain(params or {}), "auth": self._token}, timeout=HTTP_TIMEOUT,
                                     allow_redirects=False)
        except requests.RequestException as exc:
            raise PortalError("NETWORK_ERROR", str(exc), None, method) from exc
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code == 200 and isinstance(body, dict) and "error" not in body:
            return body
        error = _error_of(body, response.status_code, method)
        if response.status_code == 401:
            raise PortalAuthError(error.code, error.description, 401, method)
        raise error

    def call(self, method: str, params: dict | None = None) -> Any:
        return self.call_envelope(method, params).get("result")


def user_client(client_endpoint: str, access_token: str) -> UserClient:
    return UserClient(client_endpoint, access_token)


def unix_to_utc(ts: float | int | str) -> dt.datetime:
    """A unix time from the portal as a naive UTC datetime (how we store times)."""
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).replace(tzinfo=None)
