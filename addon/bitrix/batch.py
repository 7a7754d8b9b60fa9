"""The app client's batches: fast-bitrix24's `BitrixAsync` over our aiohttp session, 50 commands a call.

Batches go as sequential raw `batch` calls (at most 50 commands: `settings/how-to-call-rest-api/batch.md`),
wrapped where the library falls short: it re-sends any batch after a 5xx or a timeout (srh.py RETRIED_ERRORS),
which repeats writes that may already have been applied, and it loses the body of a 4xx. Our aiohttp
session's status check reads every error body itself and lets the library retry only what is safe
to repeat (the rate limit, which refuses before running anything, and 5xx of read-only batches);
a write batch that timed out or got a 5xx comes back as an uncertain error (`uncertain=True`) for
the outbox to confirm instead of re-sending.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from addon.bitrix.errors import (BLOCKED, RATE_LIMIT, TEMPORARY, MethodParked, PortalAuthError, PortalBlocked,
                                 PortalBusy, PortalError, PortalMoved, error_of)
from addon.bitrix.rest import BLOCK_KEY, HTTP_TIMEOUT, REDIRECTS, endpoint_of_location, is_idempotent, plain

BATCH_LIMIT = 50


@dataclass
class BatchResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, PortalError] = field(default_factory=dict)
    total: dict[str, Any] = field(default_factory=dict)
    next: dict[str, Any] = field(default_factory=dict)
    # Keys whose error is the command's own answer (result_error), not the whole batch's
    # refusal: the portal ran the batch and refused this command.
    own_errors: set[str] = field(default_factory=set)


def batch_command(method: str, params: dict | None) -> str:
    """One `cmd` entry of a batch: the method and its params as a PHP-bracket query string."""
    from fast_bitrix24.utils import http_build_query  # lazy: fast-bitrix24 costs ~0.1 s; most processes never batch

    query = http_build_query(plain(params or {})).rstrip("&")
    return f"{method}?{query}" if query else method


class BatchCalls:
    """The batch half of the app client (PortalClient): its parking, pace, tokens and moves come from
    the client it is mixed into."""

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
        import aiohttp  # lazy: ~0.6 s to import; a web process loads the client but rarely batches

        self._acquire()
        self.stats.batches += 1
        self.stats.commands += len(chunk)
        self.stats.http_requests += 1  # fast-bitrix24's own retries (rate limit, after a refresh) are not seen

        def every(error_for: Callable[[str], PortalError]) -> None:
            for key in chunk:
                out.errors[key] = error_for(methods[key])

        try:
            params = {"halt": 1 if halt else 0, "cmd": chunk}
            envelope = _run_async(lambda own: self._batch_async(params, idempotent, own), self)
        except _Redirected as redirect:
            # The portal changed its domain (settings/how-to-call-rest-api/change-domen.md): the
            # batch ran nowhere; send it once more, POST and body intact, to the new address.
            location, status = redirect.location, redirect.status
            new_endpoint = endpoint_of_location(location, "batch")
            if not moved and self._may_follow(new_endpoint):
                self._moved(new_endpoint)
                self._run_chunk(chunk, methods, idempotent, halt, out, moved=True)
            else:
                every(lambda m: PortalMoved(location, m, status))
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
            http_status, message = exc.status, exc.message
            every(lambda m: PortalError(f"HTTP_{http_status}", message, http_status, m))
            return
        except asyncio.TimeoutError:
            def timed_out(m: str) -> PortalError:
                error = PortalError("READ_TIMEOUT", "no answer within the read timeout", None, m)
                error.uncertain = not idempotent
                return error
            every(timed_out)
            return
        except RuntimeError as exc:  # fast-bitrix24 gave up retrying the rate limit / network errors
            description = str(exc)
            every(lambda m: PortalError("SERVER_UNAVAILABLE", description, 503, m))
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

    async def _batch_async(self, params: dict, idempotent: bool, batch_state: "_BatchState") -> dict:
        import aiohttp  # lazy, as in _run_chunk
        from fast_bitrix24 import BitrixAsync  # lazy, as in batch_command

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

        http = batch_state.session()
        bitrix = BitrixAsync(self.client_endpoint, token_func=token_func, verbose=False, client=http,
                             request_pool_size=max(int(self.settings.portal_burst), 1),
                             requests_per_second=float(self.settings.portal_rps))
        bitrix.srh.session = _NoRedirects(http, check_status)  # after __init__: its type check wants the session
        return await asyncio.wait_for(bitrix.call("batch", params, raw=True), self._read_timeout())

    def close(self) -> None:
        """Close the sessions and loops the client's batches kept (every thread's), then the rest."""
        _close_states(self.__dict__.get("_batch_states") or {})
        super().close()

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


class _NoRedirects:
    """The aiohttp session as fast-bitrix24 sees it, with redirects off: aiohttp follows a 302 to
    a POST as a GET without the body (the batch would run empty at the new address), so the
    redirect comes back to check_status and the chunk is sent again as it was. The batch's own
    status check goes with each request (the session is shared by the client's batches)."""

    def __init__(self, session, check_status):
        self._session = session
        self._check_status = check_status

    def post(self, *args, **kwargs):
        return self._session.post(*args, allow_redirects=False, raise_for_status=self._check_status, **kwargs)

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


class _BatchState:
    """One thread's event loop and aiohttp session for a client's batches."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.http = None

    def session(self):
        """The session, opened on the first batch and kept (with the loop and its keep-alive
        connection) until close(): a portal's run sends its batches one after another, and a new
        loop, session and connection for each cost more CPU than the batch itself."""
        import aiohttp  # lazy, as in _run_chunk

        if self.http is None or self.http.closed:
            # No read timeout on the session: a timeout there is retried by the library; wait_for's is not.
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=HTTP_TIMEOUT[0]))
        return self.http

    def run(self, coroutine):
        if self.loop is None or self.loop.is_closed():
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        loop, http, self.loop, self.http = self.loop, self.http, None, None
        if loop is None or loop.is_closed():
            return
        try:
            if http is not None and not http.closed:
                loop.run_until_complete(http.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


_STATE_LOCK = threading.Lock()


def _close_states(states: dict[int, _BatchState]) -> None:
    with _STATE_LOCK:
        kept = list(states.values())
        states.clear()
    for own in kept:
        own.close()


def _thread_batch_state(client) -> _BatchState:
    """The calling thread's loop and session of this client (a client may serve several threads)."""
    me = threading.get_ident()
    with _STATE_LOCK:
        states = client.__dict__.get("_batch_states")
        if states is None:
            # A client dropped without close() still closes what it kept, when it is collected.
            states = client.__dict__["_batch_states"] = {}
            weakref.finalize(client, _close_states, states)
        own = states.get(me)
        if own is None:
            own = states[me] = _BatchState()
        return own


def _run_async(make: Callable[[_BatchState], Any], client):
    """Run the coroutine `make(state)` on the calling thread's loop of the client (kept in its
    state). Unlike asyncio.run this leaves the thread's current event loop alone (a caller's loop,
    or one fast-bitrix24's sync wrapper set, stays theirs). Called from a thread whose loop is
    running (an async caller), it runs on a fresh loop and session in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        state = _thread_batch_state(client)
        return state.run(make(state))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nezabyt-batch") as pool:
        return pool.submit(_run_on_private_loop, make).result()


def _run_on_private_loop(make: Callable[[_BatchState], Any]):
    state = _BatchState()
    try:
        return state.run(make(state))
    finally:
        state.close()
