"""The REST front of the devportal: auth, limits, faults, the envelope, call log and `batch`."""
from __future__ import annotations

import re
import time as _time
from datetime import datetime, timedelta

from devportal.answers import Ctx, Listing
from devportal.errors import RestError, fault, method_not_found
from devportal.methods import METHODS
from devportal.phpquery import parse_php_query

BATCH_MAX = 50


_SCOPES = (("crm.", "crm"), ("user.option.", ""), ("user.", "user"), ("department.", "department"),
           ("placement.", "placement"), ("im.", "im"), ("log.", "log"), ("tasks.", "task"),
           ("bizproc.", "bizproc"), ("voximplant.", "telephony"), ("telephony.", "telephony"))


def scope_of(method: str) -> str:
    """The scope a method needs ('' for the basic ones every app has: app.*, profile, event.*, server.time)."""
    for prefix, scope in _SCOPES:
        if method.startswith(prefix):
            return scope
    return ""


def time_block(portal, started: float, finished: float, method: str, dt_start: datetime) -> dict:
    used, reset = portal.operating(method)
    duration = finished - started
    return {"start": round(dt_start.timestamp(), 6), "finish": round(dt_start.timestamp() + duration, 6),
            "duration": round(duration, 6), "processing": round(duration, 6),
            "date_start": portal.iso(dt_start), "date_finish": portal.iso(dt_start + timedelta(seconds=duration)),
            "operating_reset_at": int(reset), "operating": round(used, 6)}


def handle_http(portal, method: str, params: dict, bearer: str | None) -> tuple[int, dict]:
    """One HTTP request to /rest/<method>: (status, JSON body). Counted while it runs, so a test
    can wait for a request whose client died to land (DevPortal.wait_idle)."""
    portal.request_started()
    try:
        return _handle_http(portal, method, params, bearer)
    finally:
        portal.request_finished()


def _handle_http(portal, method: str, params: dict, bearer: str | None) -> tuple[int, dict]:
    method = method.lower()
    if method.endswith(".json"):
        method = method[:-5]
    started = _time.perf_counter()
    dt_start = portal.now()
    with portal.lock:
        portal.http_requests += 1
        fail = None
        if portal.fail_next > 0:
            portal.fail_next -= 1
            fail = portal.fail_status
        latency = portal.latency_ms
        portal_error = portal.portal_error
    if latency:
        _time.sleep(latency / 1000.0)  # an injected slow portal, not a test waiting for a clock
    token = bearer or _first(params, "auth") or _first(params, "access_token")
    try:
        if portal_error is not None:
            raise fault(portal_error)
        if fail is not None:
            if fail == 503:
                raise RestError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
            raise RestError("INTERNAL_SERVER_ERROR", "Internal server error", fail)
        with portal.lock:
            portal.take_rate_slot()
            user_id = portal.authenticate(token)
        ctx = Ctx(user_id=user_id, token=token)
        if method == "batch":
            result = run_batch(portal, ctx, params)
            body = {"result": result}
        else:
            body = _call(portal, ctx, method, params)
    except RestError as err:
        _log(portal, method, params, err.status, err, in_batch=False, dt=dt_start, user_id=None)
        return err.status, err.body()
    body["time"] = time_block(portal, started, _time.perf_counter(), method, dt_start)
    _log(portal, method, params, 200, None, in_batch=False, dt=dt_start, user_id=ctx.user_id)
    return 200, body


def _first(params: dict, key: str):
    value = params.get(key)
    return value if isinstance(value, str) and value else None


def _call(portal, ctx: Ctx, method: str, params: dict) -> dict:
    """Run one method under the operating-time limit; the success body without `time`."""
    handler = METHODS.get(method)
    if handler is None:
        raise method_not_found()
    injected = portal.method_errors.get(method)
    if injected is not None:
        raise fault(injected)
    needed = scope_of(method)
    granted = portal.app["scope"].split(",")
    if needed == "user" and ("user_brief" in granted or "user_basic" in granted):
        needed = ""
    if needed and needed not in granted:
        raise RestError("insufficient_scope", "The request requires higher privileges than provided by the "
                                              "access token", 401)
    with portal.lock:
        portal.check_operating(method)
    started = _time.perf_counter()
    # methods read and write shared state; none of them waits on the network, so holding the lock is cheap
    with portal.lock:
        try:
            result = handler(portal, ctx, params)
        finally:
            portal.spend_operating(method, _time.perf_counter() - started)
    if isinstance(result, Listing):
        body = {"result": result.rows}
        if result.next is not None:
            body["next"] = result.next
        body["total"] = result.total if result.total is not None else 0
        return body
    return {"result": result}


def _log(portal, method, params, status, err, in_batch, dt, user_id=None):
    params = {k: v for k, v in params.items() if k not in ("auth", "access_token")}
    with portal.lock:
        portal.calls.append({"method": method, "params": params, "time": dt, "status": status,
                             "error": err.code if err else None, "in_batch": in_batch, "user_id": user_id})


_REF = re.compile(r"\$(result|next|total|error|time)\[([^\]]*)\]((?:\[[^\]]*\])*)")


def _resolve(match, results: dict):
    kind, key, path = match.group(1), match.group(2), match.group(3)
    source = results[kind].get(key)
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(source, dict):
            source = source.get(part, source.get(part.upper()) if isinstance(part, str) else None)
        elif isinstance(source, list) and part.isdigit() and int(part) < len(source):
            source = source[int(part)]
        else:
            return None
    return source


def _substitute(value, results: dict):
    """Replace `$result[k][...]` references; a value that is only a reference takes the raw value."""
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole:
        return _resolve(whole, results)

    def text(match):
        found = _resolve(match, results)
        return "" if found is None or isinstance(found, (dict, list)) else str(found)
    return _REF.sub(text, value)


def php_array(members: dict):
    """PHP's json_encode of an array: `[]` when empty, a list when keyed 0..n-1, else an object."""
    if not members:
        return []
    keys = list(members)
    if keys == [str(i) for i in range(len(keys))]:
        return list(members.values())
    return members


def run_batch(portal, ctx: Ctx, params: dict) -> dict:
    cmd = params.get("cmd") or {}
    if isinstance(cmd, list):
        cmd = {str(i): c for i, c in enumerate(cmd)}
    halt = str(params.get("halt", "0")).lower() in ("1", "true", "y")
    results = {"result": {}, "error": {}, "total": {}, "next": {}, "time": {}}
    for position, (key, command) in enumerate(cmd.items()):
        key = str(key)
        if position >= BATCH_MAX:
            results["error"][key] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                     "error_description": "Max batch length exceeded"}
            continue
        method, _, query = str(command).partition("?")
        method = method.strip().lower()
        if method.endswith(".json"):
            method = method[:-5]
        sub_params = _substitute(parse_php_query(query), results)
        dt_start = portal.now()
        started = _time.perf_counter()
        try:
            if method == "batch":
                raise RestError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 400)
            body = _call(portal, Ctx(ctx.user_id, ctx.token, in_batch=True), method, sub_params)
        except RestError as err:
            _log(portal, method, sub_params, err.status, err, in_batch=True, dt=dt_start, user_id=ctx.user_id)
            results["error"][key] = err.body()
            if halt:
                break
            continue
        _log(portal, method, sub_params, 200, None, in_batch=True, dt=dt_start, user_id=ctx.user_id)
        results["result"][key] = body["result"]
        if "total" in body:
            results["total"][key] = body["total"]
        if "next" in body:
            results["next"][key] = body["next"]
        results["time"][key] = time_block(portal, started, _time.perf_counter(), method, dt_start)
    return {"result": php_array(results["result"]), "result_error": php_array(results["error"]),
            "result_total": php_array(results["total"]), "result_next": php_array(results["next"]),
            "result_time": php_array(results["time"])}
