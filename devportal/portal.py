"""The in-memory Bitrix24 portal: clock, OAuth tokens, limits, CRM data, events, robots and the ctl actions."""
from __future__ import annotations

import hashlib
import json
import queue
from collections import deque
import random
import re
import secrets
import threading
import time as _time
import weakref
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import requests

from devportal import crm
from devportal.errors import FAULT_STATUS, RestError, legacy_crm_error, not_found
from devportal.phpquery import as_list, flatten

DEFAULT_SCOPE = "crm,user,department,placement,im,log,task,bizproc,telephony"
ENTITIES = ("contact", "company", "deal", "lead")
OPERATING_WINDOW = 600.0  # seconds: Bitrix24 sums method time over ten 1-minute buckets
DOC_IDS = {"deal": ("CCrmDocumentDeal", "DEAL"), "lead": ("CCrmDocumentLead", "LEAD")}
# Every portal of this process: Bitrix24 has one authorization server for all portals
# (oauth.bitrix.info), so any devportal's /auth/ answers for the tokens of every devportal here.
_PORTALS: "weakref.WeakSet[DevPortal]" = weakref.WeakSet()


class DevPortal:
    """One Bitrix24 portal with (at most) one installed app. All state is guarded by `lock`."""

    def __init__(self, rps: float = 2.0, burst: int = 50, limits: bool = True, token_ttl: int = 3600,
                 tz: str = "Europe/Moscow", operating_limit: float = 480.0, member_id: str | None = None,
                 clock=None, latency_ms: int = 0, license: str = "ru_project"):
        self.lock = threading.RLock()
        self.tz = ZoneInfo(tz)
        self.tz_name = tz
        self._clock = clock
        self._offset = timedelta(0)
        self._frozen: datetime | None = None
        self.member_id = member_id or secrets.token_hex(16)
        self.base_url = "http://127.0.0.1"
        self.domain = "127.0.0.1"
        self.old_domains: set[str] = set()  # addresses it had before a move_domain: they answer 302
        # limits
        self.rps = float(rps)
        self.burst = int(burst)
        self.limits_enabled = bool(limits)
        self.operating_limit = float(operating_limit)
        self.method_cost: dict[str, float] = {}
        self._bucket_level = 0.0
        self._bucket_at: float | None = None
        self._operating: dict[str, list] = {}  # method -> [deque of (ts, seconds), running sum]
        # tokens
        self.token_ttl = int(token_ttl)
        self.access_tokens: dict[str, dict] = {}
        self.refresh_tokens: dict[str, dict] = {}
        # faults
        self.drop_events = 0.0
        self.fail_next = 0
        self.fail_status = 503
        self.latency_ms = int(latency_ms)
        self.method_errors: dict[str, str] = {}
        self.portal_error: str | None = None
        # The docs do not promise an enumeration item keeps the XML_ID it was given: "own" makes
        # the portal choose its own (md5-like) for every new item and ignore a changed one.
        self.enum_xml_ids = "given"
        self._in_flight = 0
        self._idle_cv = threading.Condition()
        # The plan app.info reports (LICENSE "<region>_<plan>"); set_plan() gives its limits too.
        self.license = license
        self._rng = random.Random(7)
        # the app
        self.app: dict | None = None
        self.options: dict = {}
        self.user_options: dict[int, dict] = {}
        self.bound_events: list[dict] = []
        self.offline_events: dict[tuple[str, str], dict] = {}
        self._offline_id = 0
        self._offline_processes: dict[str, list[int]] = {}
        self.placements: list[dict] = []
        self.robots: dict[str, dict] = {}
        self.robot_replies: list[dict] = []
        self._event_tokens: dict[str, dict] = {}
        self.stage_robots: list[dict] = []
        # what the app did
        self.calls: list[dict] = []
        _PORTALS.add(self)
        self.http_requests = 0
        self.notifications: list[dict] = []
        self.timeline_comments: list[dict] = []
        self.tasks: list[dict] = []
        self.blog_posts: list[dict] = []
        self.todos: list[dict] = []
        self.deliveries: list[dict] = []
        self._seq: dict[str, int] = {}
        # directory and CRM
        self.users: dict[int, dict] = {}
        self.departments: dict[int, dict] = {}
        self.records: dict[str, dict[int, dict]] = {e: {} for e in ENTITIES}
        self.activities: dict[int, dict] = {}
        self.stage_history: list[dict] = []
        self.call_statistics: list[dict] = []
        self.userfields: dict[str, dict[str, dict]] = {e: {} for e in ENTITIES}
        self._handler_id = 0
        # event delivery runs on one background thread, started on first use
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._pending_cv = threading.Condition()
        self._delivery_thread: threading.Thread | None = None
        self._http: requests.Session | None = None
        self._bootstrap_directory()

    # ------------------------------------------------------------------ clock
    def now(self) -> datetime:
        if self._frozen is not None:
            return self._frozen.astimezone(self.tz)
        base = self._clock() if self._clock else datetime.now(self.tz)
        return (base + self._offset).astimezone(self.tz)

    def ts(self) -> float:
        return self.now().timestamp()

    def set_clock(self, dt: datetime, frozen: bool = False) -> None:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        with self.lock:
            if frozen:
                self._frozen = dt
                return
            self._frozen = None
            base = self._clock() if self._clock else datetime.now(self.tz)
            self._offset = dt - base

    def advance(self, seconds: float = 0, days: float = 0, minutes: float = 0, hours: float = 0) -> datetime:
        delta = timedelta(seconds=seconds, days=days, minutes=minutes, hours=hours)
        with self.lock:
            if self._frozen is not None:
                self._frozen += delta
            else:
                self._offset += delta
        return self.now()

    def iso(self, dt: datetime | None = None) -> str:
        return (dt or self.now()).astimezone(self.tz).isoformat(timespec="seconds")

    def _next(self, name: str) -> int:
        self._seq[name] = self._seq.get(name, 0) + 1
        return self._seq[name]

    # ------------------------------------------------------------------ endpoints
    def bind_url(self, url: str) -> None:
        """Called by the server once it knows its port."""
        self.base_url = url.rstrip("/")
        self.domain = self.base_url.split("://", 1)[1]

    def move_domain(self, domain: str) -> dict:
        """The admin changes the portal's address (settings/how-to-call-rest-api/change-domen.md):
        from now on a request to any older address answers 302 with the same path at the new one,
        and events, tokens and the authorization server carry the new domain."""
        domain = str(domain or "").strip().lower().rstrip("/")
        if not domain or "/" in domain or domain == self.domain:
            raise ValueError(f"not a new domain: {domain!r}")
        with self.lock:
            self.old_domains.add(self.domain.lower())
            self.bind_url(f"{self.base_url.split('://', 1)[0]}://{domain}")
            self.old_domains.discard(domain)
            return {"domain": self.domain, "old_domains": sorted(self.old_domains)}

    def moved_location(self, host: str, full_path: str) -> str | None:
        """Where a request that reached an older address is sent (None: it reached the current one)."""
        if (host or "").lower() not in self.old_domains:
            return None
        return f"{self.base_url}{full_path}"

    @property
    def rest_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    @property
    def auth_endpoint(self) -> str:
        """The authorization server's REST endpoint (a real portal's `server_endpoint`,
        https://oauth.bitrix.info/rest/): the devportal serves it under /auth/."""
        return f"{self.base_url}/auth/rest/"

    # ------------------------------------------------------------------ directory
    def _bootstrap_directory(self) -> None:
        self.departments[1] = {"ID": "1", "NAME": "Компания", "SORT": "500", "PARENT": None, "UF_HEAD": "1"}
        self.users[1] = self._user_row(1, "Админ", "Порталов", "admin@example.ru", [1], admin=True,
                                       position="Директор")
        self.users[1]["TIME_ZONE"] = self.tz_name  # profile.TIME_ZONE: a zone name, or "" when not set

    def _user_row(self, uid, name, last_name, email, departments, admin=False, active=True, position="",
                  second_name="", phone=""):
        return {"ID": str(uid), "XML_ID": f"u{uid}", "ACTIVE": bool(active), "NAME": name, "LAST_NAME": last_name,
                "SECOND_NAME": second_name, "EMAIL": email, "LAST_LOGIN": None, "DATE_REGISTER": self.iso(),
                "IS_ONLINE": "N", "TIME_ZONE": "", "TIME_ZONE_OFFSET": "0", "TIMESTAMP_X": self.iso(),
                "PERSONAL_GENDER": "", "PERSONAL_MOBILE": phone, "WORK_PHONE": "", "WORK_POSITION": position,
                "UF_DEPARTMENT": [int(d) for d in departments], "USER_TYPE": "employee", "_ADMIN": admin}

    def add_user(self, name: str, last_name: str, department_id: int = 1, email: str | None = None,
                 admin: bool = False, active: bool = True, position: str = "Менеджер", second_name: str = "",
                 user_id: int | None = None, phone: str = "") -> int:
        with self.lock:
            uid = user_id or max(self.users) + 1
            self.users[uid] = self._user_row(uid, name, last_name, email or f"user{uid}@example.ru",
                                             [department_id], admin=admin, active=active, position=position,
                                             second_name=second_name, phone=phone)
            return uid

    def add_department(self, name: str, parent: int | None = 1, head: int | None = None, sort: int = 500,
                       department_id: int | None = None) -> int:
        with self.lock:
            did = department_id or max(self.departments) + 1
            self.departments[did] = {"ID": str(did), "NAME": name, "SORT": str(sort),
                                     "PARENT": str(parent) if parent else None,
                                     "UF_HEAD": str(head) if head else "0"}
            return did

    def set_department_head(self, department_id: int, user_id: int) -> None:
        with self.lock:
            self.departments[department_id]["UF_HEAD"] = str(user_id)

    def deactivate_user(self, user_id: int) -> None:
        with self.lock:
            self.users[user_id]["ACTIVE"] = False

    def is_admin(self, user_id: int) -> bool:
        user = self.users.get(int(user_id))
        return bool(user and user["_ADMIN"])

    # ------------------------------------------------------------------ OAuth tokens
    def issue_tokens(self, user_id: int = 1) -> dict:
        with self.lock:
            access = secrets.token_hex(24)
            refresh = secrets.token_hex(24)
            expires = int(self.ts()) + self.token_ttl
            self.access_tokens[access] = {"user_id": int(user_id), "expires": expires}
            self.refresh_tokens[refresh] = {"user_id": int(user_id), "used": False}
            return {"access_token": access, "refresh_token": refresh, "expires": expires,
                    "expires_in": self.token_ttl, "user_id": int(user_id)}

    def expire_tokens(self) -> None:
        with self.lock:
            now = int(self.ts())
            for info in self.access_tokens.values():
                info["expires"] = min(info["expires"], now - 1)

    def authenticate(self, token: str | None) -> int:
        """The user behind an access token, or the 401 the portal answers."""
        if not token:
            raise RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)
        info = self.access_tokens.get(token)
        if info is None or self.app is None:
            raise RestError("invalid_token", "Unable to get application by token", 401)
        if info["expires"] <= self.ts():
            raise RestError("expired_token", "The access token provided has expired.", 401)
        user = self.users.get(info["user_id"])
        if user is None or not user["ACTIVE"]:
            raise RestError("authorization_error", "User is not active", 401)
        return info["user_id"]

    def refresh(self, params: dict) -> tuple[int, dict]:
        """GET /oauth/token/: the auth server's answer (status, body)."""
        grant = params.get("grant_type")
        with self.lock:
            if self.portal_error == "PAYMENT_REQUIRED":  # settings/oauth/error-codes.md: no tokens until paid
                return 400, {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"}
            app = self.app
            if app is None or params.get("client_id") != app["client_id"] \
                    or params.get("client_secret") != app["client_secret"]:
                return 401, {"error": "invalid_client", "error_description": "Invalid client credentials"}
            if grant != "refresh_token":
                return 400, {"error": "invalid_request", "error_description": "Unsupported grant type"}
            info = self.refresh_tokens.get(params.get("refresh_token") or "")
            if info is None or info["used"]:
                return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
            info["used"] = True
            tokens = self.issue_tokens(info["user_id"])
            return 200, {"access_token": tokens["access_token"], "client_endpoint": self.rest_endpoint,
                         "domain": self.domain, "expires": tokens["expires"], "expires_in": self.token_ttl,
                         "member_id": self.member_id, "refresh_token": tokens["refresh_token"],
                         "scope": app["scope"], "server_endpoint": self.auth_endpoint, "status": "L",
                         "user_id": tokens["user_id"]}

    def app_info_for_token(self, token: str | None) -> tuple[int, dict] | None:
        """The authorization server's `app.info` for one of this portal's access tokens (None: not
        ours). Unlike the portal's own `app.info` (ID, CODE, VERSION...), the authorization server
        names the app by its client_id and the installation by member_id and domain: an app checks
        there, at a server it trusts, whose token an install claim carries."""
        with self.lock:
            info = self.access_tokens.get(token or "")
            if info is None or self.app is None:
                return None
            if info["expires"] <= self.ts():
                return 401, {"error": "expired_token", "error_description": "The access token provided has expired."}
            app = self.app
            return 200, {"result": {
                "client_id": app["client_id"], "scope": app["scope"], "user_id": info["user_id"],
                "expires": datetime.fromtimestamp(info["expires"], self.tz).isoformat(timespec="seconds"),
                "install": {"installed": bool(app["installed"]), "version": app["version"], "status": "L",
                            "scope": app["scope"], "domain": self.domain, "uri": self.base_url,
                            "client_endpoint": self.rest_endpoint, "member_id": self.member_id,
                            "member_type": "PORTAL"}}}

    def auth_block(self, user_id: int | None, refresh: bool = False) -> dict:
        """The `auth[...]` of an event or robot POST; without a user (automation) it carries no tokens."""
        app = self.app or {}
        block: dict = {}
        if user_id:
            tokens = self.issue_tokens(user_id)
            block.update(access_token=tokens["access_token"], expires=tokens["expires"],
                         expires_in=self.token_ttl)
            if refresh:
                block["refresh_token"] = tokens["refresh_token"]
        block.update(scope=event_scope(app.get("scope", "")), domain=self.domain, server_endpoint=self.auth_endpoint,
                     status="L", client_endpoint=self.rest_endpoint, member_id=self.member_id)
        if user_id:
            block["user_id"] = int(user_id)
        block["application_token"] = app.get("application_token", "")
        return block

    # ------------------------------------------------------------------ limits and faults
    def set_limits(self, rps: float | None = None, burst: int | None = None, enabled: bool | None = None,
                   operating_limit: float | None = None) -> None:
        with self.lock:
            if rps is not None:
                self.rps = float(rps)
            if burst is not None:
                self.burst = int(burst)
            if enabled is not None:
                self.limits_enabled = bool(enabled)
            if operating_limit is not None:
                self.operating_limit = float(operating_limit)
            self._bucket_level = 0.0
            self._bucket_at = None

    def set_plan(self, license: str) -> dict:
        """Put the portal on a plan (app.info LICENSE, e.g. "ru_ent250" or "ru_std") with that plan's
        request-rate limits from Bitrix24's limits page: Enterprise 5/s and 250, the others 2/s and 50."""
        enterprise = license.split("_", 1)[-1].lower().startswith("ent")
        with self.lock:
            self.license = license
        self.set_limits(rps=5.0 if enterprise else 2.0, burst=250 if enterprise else 50)
        return {"license": license, "rps": self.rps, "burst": self.burst}

    def set_method_cost(self, method: str, seconds: float | None) -> None:
        """Make each call of `method` count `seconds` of operating time (None: its real time)."""
        with self.lock:
            if seconds is None:
                self.method_cost.pop(method.lower(), None)
            else:
                self.method_cost[method.lower()] = float(seconds)

    def set_faults(self, drop_events: float = 0.0, fail_next: int = 0, fail_status: int = 503,
                   latency_ms: int = 0, method_errors: dict[str, str] | None = None,
                   portal_error: str | None = None) -> None:
        """Injected faults; a call without arguments clears them all.

        `method_errors`: {method: error code}: that method answers the code (with its HTTP status,
        FAULT_STATUS) on its own and inside a batch. `portal_error`: every REST request answers it,
        as a portal whose subscription lapsed (PAYMENT_REQUIRED, its token refresh refused too) or
        that Bitrix24 blocked by hand (OVERLOAD_LIMIT) does."""
        for code in [*(method_errors or {}).values(), *([portal_error] if portal_error else [])]:
            if code not in FAULT_STATUS:
                raise ValueError(f"no fault {code!r}; known: {sorted(FAULT_STATUS)}")
        with self.lock:
            self.drop_events = float(drop_events)
            self.fail_next = int(fail_next)
            self.fail_status = int(fail_status)
            self.latency_ms = int(latency_ms)
            self.method_errors = {m.lower(): c for m, c in (method_errors or {}).items()}
            self.portal_error = portal_error

    def take_rate_slot(self) -> None:
        """The leaky bucket: +1 per HTTP request, drains `rps` a second, 503 above `burst`.

        It drains on the portal clock: a frozen clock does not drain it, `advance()` does."""
        if not self.limits_enabled:
            return
        now = self.ts()
        if self._bucket_at is not None:
            # A clock set backwards (a test or the demo rewinding) never fills the bucket.
            self._bucket_level = max(0.0, self._bucket_level - max(0.0, now - self._bucket_at) * self.rps)
        self._bucket_at = now
        if self._bucket_level + 1 > self.burst:
            raise RestError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
        self._bucket_level += 1

    def operating(self, method: str) -> tuple[float, float]:
        """(seconds used by `method` in the window, when the oldest of them leaves it)."""
        now = self.ts()
        entry = self._operating.get(method)
        if entry is None:
            return 0.0, now + OPERATING_WINDOW
        spent, total = entry
        while spent and spent[0][0] <= now - OPERATING_WINDOW:
            total -= spent.popleft()[1]
        entry[1] = total = max(total, 0.0)
        reset = (spent[0][0] if spent else now) + OPERATING_WINDOW
        return total, reset

    def check_operating(self, method: str) -> None:
        if not self.limits_enabled:
            return
        used, _ = self.operating(method)
        if used >= self.operating_limit:
            raise RestError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)

    def spend_operating(self, method: str, seconds: float) -> None:
        cost = self.method_cost.get(method, seconds)
        entry = self._operating.setdefault(method, [deque(), 0.0])
        entry[0].append((self.ts(), cost))
        entry[1] += cost

    # ------------------------------------------------------------------ event delivery
    def _start_delivery(self) -> None:
        if self._delivery_thread is None or not self._delivery_thread.is_alive():
            self._http = requests.Session()
            self._delivery_thread = threading.Thread(target=self._deliver_loop, name="devportal-events",
                                                     daemon=True)
            self._delivery_thread.start()

    def _enqueue(self, job: dict) -> None:
        with self._pending_cv:
            self._pending += 1
        self._start_delivery()
        self._queue.put(job)

    def _deliver_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._post_job(job, self._http)
            finally:
                with self._pending_cv:
                    self._pending -= 1
                    self._pending_cv.notify_all()

    def _post_job(self, job: dict, session: requests.Session | None = None) -> None:
        record = {"url": job["url"], "kind": job["kind"], "event": job.get("event"), "time": self.iso()}
        try:
            response = (session or requests).post(job["url"], data=job["pairs"], timeout=10)
            record["status"] = response.status_code
        except requests.RequestException as exc:  # no retries: Bitrix24 logs and drops
            record["status"] = None
            record["error"] = str(exc)
        with self.lock:
            self.deliveries.append(record)

    def request_started(self) -> None:
        with self._idle_cv:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._idle_cv:
            self._in_flight -= 1
            self._idle_cv.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no REST request is being answered (one sent by a killed process still runs
        to its end, as on a real portal); False on timeout."""
        deadline = _time.monotonic() + timeout
        with self._idle_cv:
            while self._in_flight:
                left = deadline - _time.monotonic()
                if left <= 0:
                    return False
                self._idle_cv.wait(left)
        return True

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Block until every queued event/robot POST has been attempted; False on timeout."""
        deadline = _time.monotonic() + timeout
        with self._pending_cv:
            while self._pending:
                left = deadline - _time.monotonic()
                if left <= 0:
                    return False
                self._pending_cv.wait(left)
        return True

    def close(self) -> None:
        _PORTALS.discard(self)
        if self._delivery_thread is not None and self._delivery_thread.is_alive():
            self._queue.put(None)
            self._delivery_thread.join(timeout=5)
        if self._http is not None:
            self._http.close()

    def fire(self, event: str, entity_id, user_id: int | None, data: dict | None = None,
             refresh: bool = False) -> None:
        """Queue `event` for every handler bound to it (online) and note it for offline readers;
        `refresh`: its auth carries a refresh token too (the app's own install and update events)."""
        event = event.upper()
        with self.lock:
            if self.app is None or not self.app["installed"]:
                return  # a UI app gets nothing before BX24.installFinish()
            payload = data if data is not None else {"FIELDS": {"ID": entity_id}}
            for handler in self.bound_events:
                if handler["event"] != event:
                    continue
                if handler["offline"]:
                    self._store_offline(event, payload, user_id)
                    continue
                if self.drop_events and self._rng.random() < self.drop_events:
                    self.deliveries.append({"url": handler["handler"], "kind": "event", "event": event,
                                            "status": "dropped", "time": self.iso()})
                    continue
                auth_user = int(handler["auth_type"]) or user_id
                form = {"event": event, "event_handler_id": handler["ID"], "data": payload,
                        "ts": int(self.ts()), "auth": self.auth_block(auth_user, refresh=refresh)}
                self._enqueue({"url": handler["handler"], "pairs": flatten(form), "kind": "event",
                               "event": event})

    def _store_offline(self, event: str, payload: dict, user_id) -> None:
        key = (event, str(payload.get("FIELDS", {}).get("ID", "")))
        self._offline_id += 1
        self.offline_events.pop(key, None)  # the queue keeps only the latest record per object
        self.offline_events[key] = {"ID": str(self._offline_id), "TIMESTAMP_X": self.iso(), "EVENT_NAME": event,
                                    "EVENT_DATA": payload, "EVENT_ADDITIONAL": {"user_id": str(user_id or 0)},
                                    "MESSAGE_ID": secrets.token_hex(16), "PROCESS_ID": None, "ERROR": "0"}

    # ------------------------------------------------------------------ install / uninstall
    def install_app(self, app_url: str, client_id: str, client_secret: str, scope: str = DEFAULT_SCOPE,
                    api_only: bool = False, install_path: str = "/install", finish: bool = True,
                    lang: str = "ru", page_path: str = "/app") -> dict:
        """Install like a portal: POST the installer page (or ONAPPINSTALL for an API-only app)."""
        tokens = self.register_app(app_url, client_id, client_secret, scope, installed=api_only,
                                   install_path=install_path, page_path=page_path)
        application_token = tokens["application_token"]
        url = self.app["app_url"] + install_path
        if api_only:
            form = {"event": "ONAPPINSTALL",
                    "data": {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": lang},
                    "ts": int(self.ts()),
                    "auth": {"access_token": tokens["access_token"], "expires": tokens["expires"],
                             "expires_in": self.token_ttl, "scope": event_scope(scope), "domain": self.domain,
                             "server_endpoint": self.auth_endpoint, "status": "L",
                             "client_endpoint": self.rest_endpoint, "member_id": self.member_id,
                             "user_id": 1, "refresh_token": tokens["refresh_token"],
                             "application_token": application_token}}
            response = requests.post(url, data=flatten(form), timeout=30)
        else:
            response = requests.post(url, params=self.page_query(lang),
                                     data=self.page_form(tokens, "DEFAULT", {}), timeout=60)
            if finish:
                self.finish_install(lang)
                self.wait_for_deliveries(timeout=60)  # ONAPPINSTALL reached the app (or failed)
        return {**tokens, "application_token": application_token, "member_id": self.member_id,
                "domain": self.domain, "client_endpoint": self.rest_endpoint, "status_code": response.status_code,
                "answer": response.text}

    def register_app(self, app_url: str, client_id: str, client_secret: str, scope: str = DEFAULT_SCOPE,
                     installed: bool = True, install_path: str = "/install", page_path: str = "/app") -> dict:
        """Put the app on the portal without any POST (benchmarks, scripts); returns admin tokens."""
        with self.lock:
            application_token = secrets.token_hex(16)
            self.app = {"client_id": client_id, "client_secret": client_secret, "app_url": app_url.rstrip("/"),
                        "scope": scope, "application_token": application_token, "installed": installed,
                        "api_only": installed, "install_path": install_path, "page_path": page_path,
                        "code": client_id, "version": 1,
                        "id": str(self._next("app"))}
            return {**self.issue_tokens(1), "application_token": application_token}

    def page_query(self, lang: str = "ru") -> dict:
        return {"DOMAIN": self.domain, "PROTOCOL": "1" if self.base_url.startswith("https") else "0",
                "LANG": lang, "APP_SID": secrets.token_hex(16)}

    def page_form(self, tokens: dict, placement: str, options: dict) -> dict:
        return {"AUTH_ID": tokens["access_token"], "AUTH_EXPIRES": str(self.token_ttl),
                "REFRESH_ID": tokens["refresh_token"], "SERVER_ENDPOINT": self.auth_endpoint,
                "member_id": self.member_id, "status": "L", "PLACEMENT": placement,
                "PLACEMENT_OPTIONS": json.dumps(options, ensure_ascii=False, separators=(",", ":"))}

    def finish_install(self, lang: str = "ru") -> None:
        """What BX24.installFinish() does: from now on events flow and placements show, and the
        ONAPPINSTALL handler bound during the install gets its event, with the admin's tokens and
        the application_token (api-reference/common/events/on-app-install.md)."""
        with self.lock:
            if self.app is None:
                return
            self.app["installed"] = True
            version = str(self.app["version"])
        self.fire("ONAPPINSTALL", None, 1, data={"VERSION": version, "ACTIVE": "Y", "INSTALLED": "Y",
                                                 "LANGUAGE_ID": lang}, refresh=True)

    def update_app(self, version: int | None = None, finish: bool = True, lang: str = "ru") -> dict:
        """A new version of the app (api-reference/common/events/on-app-update.md): the portal keeps
        the app's tokens but drops its event handlers and robots and issues a new application_token;
        ONAPPUPDATE goes to the handlers bound for it before the drop (VERSION, PREVIOUS_VERSION, the
        new token). A UI app's installer page opens again (then installFinish: ONAPPINSTALL to
        whatever the installer bound); an API-only app has only the event to go on."""
        with self.lock:
            if self.app is None:
                raise KeyError("no app is installed")
            app = self.app
            previous = app["version"]
            app["version"] = version or app["version"] + 1
            app["application_token"] = secrets.token_hex(16)
            handlers = [h for h in self.bound_events if h["event"] == "ONAPPUPDATE" and not h["offline"]]
            self.bound_events.clear()
            self.offline_events.clear()
            self.robots.clear()
            app["installed"] = app["api_only"]
            tokens = self.issue_tokens(1)
            forms = [(h["handler"], {"event": "ONAPPUPDATE", "event_handler_id": h["ID"],
                                     "data": {"VERSION": str(app["version"]), "PREVIOUS_VERSION": str(previous),
                                              "LANGUAGE_ID": lang},
                                     "ts": int(self.ts()),
                                     "auth": {**self.auth_block(None), "access_token": tokens["access_token"],
                                              "expires": tokens["expires"], "expires_in": self.token_ttl,
                                              "refresh_token": tokens["refresh_token"], "status": "L"}})
                     for h in handlers]
        for url, form in forms:
            self._enqueue({"url": url, "pairs": flatten(form), "kind": "event", "event": "ONAPPUPDATE"})
        self.wait_for_deliveries(timeout=60)
        status, text = None, ""
        if app["api_only"]:
            last = next((d for d in reversed(self.deliveries) if d.get("event") == "ONAPPUPDATE"), None)
            status = last["status"] if last else None
        else:
            response = requests.post(app["app_url"] + app["install_path"], params=self.page_query(lang),
                                     data=self.page_form(tokens, "DEFAULT", {}), timeout=60)
            status, text = response.status_code, response.text
            if finish:
                self.finish_install(lang)
                self.wait_for_deliveries(timeout=60)
        return {**tokens, "application_token": app["application_token"], "status_code": status, "answer": text,
                "update_deliveries": len(forms)}

    def uninstall_app(self, clean: bool = True, lang: str = "ru") -> int:
        """POST ONAPPUNINSTALL (no tokens) to each bound handler; drop handlers, placements, tokens."""
        with self.lock:
            if self.app is None:
                return 0
            handlers = [h for h in self.bound_events if h["event"] == "ONAPPUNINSTALL" and not h["offline"]]
            form_auth = {"domain": self.domain, "server_endpoint": self.auth_endpoint,
                         "client_endpoint": self.rest_endpoint, "member_id": self.member_id,
                         "application_token": self.app["application_token"]}
            forms = [(h["handler"], {"event": "ONAPPUNINSTALL", "event_handler_id": h["ID"],
                                     "data": {"LANGUAGE_ID": lang, "CLEAN": "1" if clean else "0"},
                                     "ts": int(self.ts()), "auth": form_auth}) for h in handlers]
            self.bound_events.clear()
            self.offline_events.clear()
            self.placements.clear()
            self.robots.clear()
            self.access_tokens.clear()
            self.refresh_tokens.clear()
            if clean:
                self.options.clear()
                self.user_options.clear()
            self.app = None
        for url, form in forms:
            self._enqueue({"url": url, "pairs": flatten(form), "kind": "event", "event": "ONAPPUNINSTALL"})
        return len(forms)

    # ------------------------------------------------------------------ CRM writes (REST and ctl share them)
    def _fm_entries(self, value) -> list[dict]:
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list):
            return []
        return [e for e in value if isinstance(e, dict)]

    def _apply_multi(self, record: dict, name: str, value) -> None:
        """PHONE/EMAIL update rules: no ID adds; ID with VALUE replaces; DELETE=Y, empty or bare ID deletes."""
        current = record.setdefault(name, [])
        for entry in self._fm_entries(value):
            entry = {str(k).upper(): v for k, v in entry.items()}
            entry_id = str(entry.get("ID") or "")
            if not entry_id or entry_id.startswith("n"):
                if entry.get("VALUE") not in (None, ""):
                    current.append({"ID": str(self._next("fm")), "VALUE_TYPE": str(entry.get("VALUE_TYPE") or
                                    ("WORK" if name != "IM" else "OTHER")), "VALUE": str(entry["VALUE"]),
                                    "TYPE_ID": name})
                continue
            existing = next((e for e in current if e["ID"] == entry_id), None)
            if existing is None:
                continue
            if str(entry.get("DELETE", "")).upper() == "Y" or entry.get("VALUE") in (None, ""):
                current.remove(existing)
            else:
                existing["VALUE"] = str(entry["VALUE"])
                if entry.get("VALUE_TYPE"):
                    existing["VALUE_TYPE"] = str(entry["VALUE_TYPE"])

    def _uf_value(self, definition: dict, value):
        multiple = definition["MULTIPLE"] == "Y"
        values = value if isinstance(value, list) else (list(value.values()) if isinstance(value, dict) else [value])
        values = [v for v in values if v not in (None, "", False)]
        if definition["USER_TYPE_ID"] == "enumeration":
            ids = {item["ID"] for item in definition["LIST"]}
            values = [str(v) for v in values if str(v) in ids]
        elif definition["USER_TYPE_ID"] == "boolean":
            values = ["1" if str(v).upper() in ("1", "Y", "TRUE") else "0" for v in values]
        else:
            values = [str(v) for v in values]
        if multiple:
            return values
        return values[0] if values else None

    def _apply_fields(self, entity: str, record: dict, fields: dict) -> bool:
        schema = crm.SCHEMAS[entity]
        ufs = self.userfields[entity]
        changed = False
        for raw_key, value in (fields or {}).items():
            key = str(raw_key).upper()
            if key in crm.MULTI_FIELDS and key in schema:
                self._apply_multi(record, key, value)
                changed = True
            elif key in ufs:
                record[key] = self._uf_value(ufs[key], value)
                changed = True
            elif key in schema and not schema[key]["isReadOnly"] or key in ("COMPANY_ID", "CONTACT_ID"):
                if isinstance(value, (list, dict)):
                    continue
                if isinstance(value, bool):
                    value = "Y" if value else "N"
                record[key] = None if value is None or value == "" else str(value)
                changed = True
        if "PHONE" in schema:
            record["HAS_PHONE"] = "Y" if record.get("PHONE") else "N"
            record["HAS_EMAIL"] = "Y" if record.get("EMAIL") else "N"
        if entity == "deal" and "STAGE_ID" in record:
            semantic = crm.STAGE_SEMANTICS["deal"].get(record["STAGE_ID"].split(":")[-1], "P")
            record["STAGE_SEMANTIC_ID"] = semantic
            record["CLOSED"] = "N" if semantic == "P" else "Y"
        if entity == "lead" and "STATUS_ID" in record:
            record["STATUS_SEMANTIC_ID"] = crm.STAGE_SEMANTICS["lead"].get(record["STATUS_ID"], "P")
        return changed

    def _blank(self, entity: str, rid: int, user_id: int, when: datetime) -> dict:
        record = {name: None for name, spec in crm.SCHEMAS[entity].items() if name not in crm.MULTI_FIELDS}
        stamp = self.iso(when)
        record.update(ID=str(rid), DATE_CREATE=stamp, DATE_MODIFY=stamp, CREATED_BY_ID=str(user_id),
                      MODIFY_BY_ID=str(user_id), ASSIGNED_BY_ID=str(user_id), OPENED="Y")
        for name, definition in self.userfields[entity].items():
            record[name] = [] if definition["MULTIPLE"] == "Y" else None
        if entity in ("contact", "company", "lead"):
            record.update(HAS_PHONE="N", HAS_EMAIL="N", HAS_IMOL="N")
        if entity == "contact":
            record.update(EXPORT="Y", TYPE_ID="CLIENT", SOURCE_ID="SELF")
        if entity == "company":
            record.update(COMPANY_TYPE="CUSTOMER", CURRENCY_ID="RUB")
        if entity == "deal":
            record.update(STAGE_ID="NEW", CATEGORY_ID="0", CURRENCY_ID="RUB", OPPORTUNITY="0.00", IS_NEW="Y",
                          CLOSED="N", STAGE_SEMANTIC_ID="P", PROBABILITY=None, TYPE_ID="SALE",
                          BEGINDATE=self.iso(when.replace(hour=0, minute=0, second=0, microsecond=0)))
        if entity == "lead":
            record.update(STATUS_ID="NEW", STATUS_SEMANTIC_ID="P", CURRENCY_ID="RUB", OPPORTUNITY="0.00")
        return record

    def add_record(self, entity: str, fields: dict, user_id: int = 1, when: datetime | None = None,
                   fire: bool = True) -> int:
        with self.lock:
            rid = self._next(entity)
            record = self._blank(entity, rid, user_id, when or self.now())
            if entity == "company" and not (fields or {}).get("TITLE"):
                fields = {**(fields or {}), "TITLE": f"Компания №{rid}"}
            self._apply_fields(entity, record, fields)
            if "ASSIGNED_BY_ID" not in {str(k).upper() for k in (fields or {})}:
                record["ASSIGNED_BY_ID"] = str(user_id)
            self.records[entity][rid] = record
            if entity in DOC_IDS:
                self._record_stage(entity, record, 1, when or self.now())
            if fire:
                self.fire(f"ONCRM{entity.upper()}ADD", str(rid), user_id)
            return rid

    def get_record(self, entity: str, rid) -> dict:
        try:
            record = self.records[entity].get(int(rid))
        except (TypeError, ValueError):
            raise legacy_crm_error("ID is not defined or invalid.") from None
        if record is None:
            raise not_found()
        return record

    def update_record(self, entity: str, rid, fields: dict, user_id: int = 1) -> bool:
        with self.lock:
            record = self.get_record(entity, rid)
            stage_field = "STAGE_ID" if entity == "deal" else "STATUS_ID"
            old_stage = record.get(stage_field)
            self._apply_fields(entity, record, fields)
            record["DATE_MODIFY"] = self.iso()
            record["MODIFY_BY_ID"] = str(user_id)
            if entity == "deal":
                record["IS_NEW"] = "N"
            self.fire(f"ONCRM{entity.upper()}UPDATE", record["ID"], user_id)
            if entity in DOC_IDS and record.get(stage_field) != old_stage:
                semantic = record.get("STAGE_SEMANTIC_ID" if entity == "deal" else "STATUS_SEMANTIC_ID")
                self._record_stage(entity, record, 2 if semantic == "P" else 3, self.now())
                self._stage_entered(entity, int(record["ID"]), record.get(stage_field))
            return True

    def delete_record(self, entity: str, rid, user_id: int = 1) -> bool:
        with self.lock:
            record = self.get_record(entity, rid)
            del self.records[entity][int(record["ID"])]
            self.fire(f"ONCRM{entity.upper()}DELETE", record["ID"], user_id)
            return True

    def _record_stage(self, entity: str, record: dict, type_id: int, when: datetime) -> None:
        """A crm.stagehistory row: 1 created, 2 moved to an intermediate stage, 3 to a final one."""
        row = {"ID": self._next("stage_history"), "TYPE_ID": type_id, "OWNER_ID": int(record["ID"]),
               "CREATED_TIME": self.iso(when), "_entity": entity}
        if entity == "deal":
            row.update(CATEGORY_ID=int(record.get("CATEGORY_ID") or 0),
                       STAGE_SEMANTIC_ID=record.get("STAGE_SEMANTIC_ID"), STAGE_ID=record.get("STAGE_ID"))
        else:
            row.update(STATUS_SEMANTIC_ID=record.get("STATUS_SEMANTIC_ID"), STATUS_ID=record.get("STATUS_ID"))
        self.stage_history.append(row)

    # the ctl actions: a user working in the CRM
    def act_add(self, entity: str, fields: dict, user_id: int = 1) -> int:
        return self.add_record(entity, fields, user_id)

    def act_update(self, entity: str, entity_id: int, fields: dict, user_id: int = 1) -> bool:
        return self.update_record(entity, entity_id, fields, user_id)

    def act_delete(self, entity: str, entity_id: int, user_id: int = 1) -> bool:
        return self.delete_record(entity, entity_id, user_id)

    def act_move_stage(self, entity: str, entity_id: int, stage_id: str, user_id: int = 1) -> bool:
        field = "STAGE_ID" if entity == "deal" else "STATUS_ID"
        return self.update_record(entity, entity_id, {field: stage_id}, user_id)

    def act_close_deal(self, deal_id: int, won: bool, user_id: int = 1) -> bool:
        with self.lock:
            record = self.get_record("deal", deal_id)
            prefix = "" if record.get("CATEGORY_ID") in (None, "0") else f"C{record['CATEGORY_ID']}:"
            return self.update_record("deal", deal_id, {"STAGE_ID": prefix + ("WON" if won else "LOSE"),
                                                        "CLOSEDATE": self.iso()}, user_id)

    def add_activity(self, fields: dict, user_id: int = 1, fire: bool = True) -> int:
        with self.lock:
            aid = self._next("activity")
            stamp = self.iso()
            row = {name: None for name in crm.ACTIVITY_FIELDS}
            row.update(ID=str(aid), CREATED=stamp, LAST_UPDATED=stamp, AUTHOR_ID=str(user_id),
                       EDITOR_ID=str(user_id), PRIORITY="2", DESCRIPTION="", DESCRIPTION_TYPE="1",
                       NOTIFY_TYPE="0", NOTIFY_VALUE="0", SETTINGS=[], ORIGINATOR_ID=None, ORIGIN_ID=None)
            for key, value in fields.items():
                row[key] = value if key in ("COMMUNICATIONS", "BINDINGS", "SETTINGS") else \
                    (None if value is None else str(value))
            row.setdefault("BINDINGS", [{"OWNER_ID": row["OWNER_ID"], "OWNER_TYPE_ID": row["OWNER_TYPE_ID"]}])
            self.activities[aid] = row
            owner = self.records.get(crm.OWNER_TYPE_NAME.get(int(row["OWNER_TYPE_ID"] or 0), ""), {}) \
                .get(int(row["OWNER_ID"] or 0))
            if owner is not None and "LAST_ACTIVITY_TIME" in owner:
                owner["LAST_ACTIVITY_TIME"] = row["END_TIME"] or row["START_TIME"] or stamp
                owner["LAST_ACTIVITY_BY"] = row["RESPONSIBLE_ID"]
            if fire:
                self.fire("ONCRMACTIVITYADD", str(aid), user_id)
            return aid

    def act_call(self, owner_type, owner_id: int, user_id: int = 1, start: datetime | None = None,
                 end: datetime | None = None, completed: bool = True, direction: int = 2,
                 phone: str | None = None, duration: int = 120, also: tuple = ()) -> int:
        """A phone call logged in the CRM: a TYPE_ID 2 activity (DIRECTION 1 in, 2 out). `also`:
        more (owner type, id) the call is bound to (BINDINGS), as a call to a company's contact
        person is bound to the company too."""
        owner_type_id = owner_type if isinstance(owner_type, int) else crm.OWNER_TYPE[owner_type]
        with self.lock:
            start = start or self.now()
            end = end or (start + timedelta(seconds=duration))
            owner = self.records[crm.OWNER_TYPE_NAME[owner_type_id]].get(int(owner_id)) or {}
            if phone is None:
                phone = next((e["VALUE"] for e in owner.get("PHONE") or []), "")
            incoming = int(direction) == 1
            aid = self.add_activity({
                "OWNER_ID": owner_id, "OWNER_TYPE_ID": owner_type_id, "TYPE_ID": 2,
                "PROVIDER_ID": "VOXIMPLANT_CALL", "PROVIDER_TYPE_ID": "CALL", "PROVIDER_GROUP_ID": None,
                "ASSOCIATED_ENTITY_ID": "0",
                "SUBJECT": ("Входящий звонок " if incoming else "Исходящий звонок ") + phone,
                "START_TIME": self.iso(start), "END_TIME": self.iso(end), "DEADLINE": self.iso(end),
                "COMPLETED": "Y" if completed else "N", "STATUS": "2" if completed else "1",
                "RESPONSIBLE_ID": user_id, "DIRECTION": direction, "LOCATION": "",
                "COMMUNICATIONS": [{"TYPE": "PHONE", "VALUE": phone, "ENTITY_ID": str(owner_id),
                                    "ENTITY_TYPE_ID": str(owner_type_id)}],
                "BINDINGS": [{"OWNER_ID": str(i), "OWNER_TYPE_ID": str(t if isinstance(t, int) else crm.OWNER_TYPE[t])}
                             for t, i in [(owner_type_id, owner_id), *also]],
            }, user_id)
            call_id = f"externalCall.{secrets.token_hex(8)}"
            event = {"CALL_ID": call_id, "CALL_TYPE": "2" if incoming else "1", "PHONE_NUMBER": phone,
                     "PORTAL_NUMBER": "", "PORTAL_USER_ID": str(user_id),
                     "CALL_DURATION": str(int((end - start).total_seconds())) if completed else "0",
                     "CALL_START_DATE": self.iso(start), "COST": "0.0000", "COST_CURRENCY": "RUR",
                     "CALL_FAILED_CODE": "200" if completed else "304",
                     "CALL_FAILED_REASON": "Success call" if completed else "Missed call",
                     "CRM_ACTIVITY_ID": str(aid)}
            self.call_statistics.append({"ID": str(len(self.call_statistics) + 1), **event,
                                         "EXTERNAL_CALL_ID": None, "CALL_CATEGORY": "external",
                                         "CRM_ENTITY_TYPE": crm.OWNER_TYPE_NAME[owner_type_id].upper(),
                                         "CRM_ENTITY_ID": str(owner_id), "CALL_RECORD_URL": "",
                                         "REST_APP_ID": None, "CALL_VOTE": None, "COMMENT": None})
            self.fire("ONVOXIMPLANTCALLEND", None, user_id, data=event)
            return aid

    # ------------------------------------------------------------------ robots
    def _stage_entered(self, entity: str, rid: int, stage: str | None) -> None:
        for hook in self.stage_robots:
            if hook["document_type"] == entity and hook["stage_id"] == stage:
                self._robot_job(hook["code"], entity, rid, hook["properties"], None, queued=True)

    def bind_stage_robot(self, document_type: str, stage_id: str, code: str, properties: dict | None = None):
        """An automation rule: moving a deal/lead into `stage_id` runs robot `code`."""
        with self.lock:
            self.stage_robots.append({"document_type": document_type, "stage_id": stage_id, "code": code,
                                      "properties": dict(properties or {})})

    def run_robot(self, code: str, document_type: str, document_id: int, properties: dict | None = None,
                  use_subscription: str | None = None) -> str:
        """POST the robot form to the robot's HANDLER now; returns the event_token. The form's
        use_subscription is the robot's registered USE_SUBSCRIPTION unless given."""
        return self._robot_job(code, document_type, int(document_id), properties or {}, use_subscription,
                               queued=False)

    def robot_shown(self, code: str, document_type: str) -> bool:
        """Does the automation designer of `document_type` offer robot `code`? A robot's FILTER
        (bizproc-robot-add.md) INCLUDEs or EXCLUDEs document types, full or partial
        (['crm', 'CCrmDocumentDeal']), or editions ('b24' cloud, 'box' on-premise: we are cloud);
        a robot with no FILTER shows everywhere."""
        robot = self.robots.get(code)
        if robot is None or document_type not in DOC_IDS:
            return False
        document = ["crm", *DOC_IDS[document_type]]
        rules = {str(k).upper(): as_list(v) for k, v in (robot.get("FILTER") or {}).items()} \
            if isinstance(robot.get("FILTER"), dict) else {}

        def matches(rule) -> bool:
            if isinstance(rule, str):
                return rule == "b24"
            parts = [str(p) for p in as_list(rule)]
            return bool(parts) and document[:len(parts)] == parts

        if rules.get("INCLUDE") and not any(matches(r) for r in rules["INCLUDE"]):
            return False
        return not any(matches(r) for r in rules.get("EXCLUDE") or [])

    def robots_shown(self, document_type: str) -> list[dict]:
        """The robots the designer of `document_type` lists (CODE and NAME)."""
        with self.lock:
            return [{"CODE": code, "NAME": r["NAME"]} for code, r in self.robots.items()
                    if self.robot_shown(code, document_type)]

    def _robot_job(self, code, document_type, document_id, properties, use_subscription, queued) -> str:
        with self.lock:
            robot = self.robots.get(code)
            if robot is None:
                raise KeyError(f"robot {code!r} is not registered")
            if not self.robot_shown(code, document_type):
                raise KeyError(f"robot {code!r} is not offered for {document_type}: its FILTER excludes it")
            doc_class, doc_prefix = DOC_IDS[document_type]
            workflow_id = secrets.token_hex(12)
            event_token = f"{workflow_id}|A{secrets.token_hex(6)}|{secrets.token_hex(16)}.{secrets.token_hex(20)}"
            if use_subscription is None:
                use_subscription = "Y" if str(robot.get("USE_SUBSCRIPTION") or "").upper() == "Y" else "N"
            # bizproc-event-send.md: an event can be sent only for a robot registered with
            # USE_SUBSCRIPTION Y; otherwise the automation goes on without waiting for one.
            self._event_tokens[event_token] = {"code": code, "used": False, "document_id": document_id,
                                               "document_type": document_type,
                                               "subscribed": str(use_subscription).upper() == "Y"}
            declared = robot.get("PROPERTIES") or {}
            props = {}
            for key, value in properties.items():
                ptype = str((declared.get(key) or {}).get("Type", "")).lower()
                if ptype == "user":
                    value = [f"user_{v}" if str(v).isdigit() else v for v in value] if isinstance(value, list) \
                        else (f"user_{value}" if str(value).isdigit() else value)
                props[key] = value
            form = {"workflow_id": workflow_id, "code": code,
                    "document_id": ["crm", doc_class, f"{doc_prefix}_{document_id}"],
                    "document_type": ["crm", doc_class, doc_prefix], "event_token": event_token,
                    "properties": props, "use_subscription": use_subscription, "ts": int(self.ts()),
                    "auth": self.auth_block(int(robot.get("AUTH_USER_ID") or 1), refresh=True)}
            job = {"url": robot["HANDLER"], "pairs": flatten(form), "kind": "robot", "event": code}
        if queued:
            self._enqueue(job)
        else:
            with self._pending_cv:
                self._pending += 1
            try:
                self._post_job(job)  # from the caller's thread, with its own connection
            finally:
                with self._pending_cv:
                    self._pending -= 1
                    self._pending_cv.notify_all()
        return event_token

    def robot_reply(self, event_token: str, return_values: dict, log_message: str | None) -> None:
        with self.lock:
            info = self._event_tokens.get(event_token or "")
            if info is None or info["used"] or not info.get("subscribed", True):
                raise RestError("ACCESS_DENIED", "Access denied!", 403)
            info["used"] = True
            self.robot_replies.append({"event_token": event_token, "code": info["code"],
                                       "document_type": info["document_type"],
                                       "document_id": info["document_id"],
                                       "return_values": return_values or {}, "log_message": log_message,
                                       "time": self.iso()})

    # ------------------------------------------------------------------ seed
    def seed(self, **kwargs) -> dict:
        from devportal.seed import seed_portal
        return seed_portal(self, **kwargs)

    # ------------------------------------------------------------------ helpers for readers
    def find_records(self, entity: str, **equals) -> list[dict]:
        with self.lock:
            return [r for r in self.records[entity].values()
                    if all(str(r.get(k)) == str(v) for k, v in equals.items())]

    def status_name(self, entity: str, record: dict, field: str) -> str:
        definition = self.userfields[entity].get(field)
        if not definition:
            return ""
        value = record.get(field)
        values = value if isinstance(value, list) else [value]
        names = [item["VALUE"] for item in definition["LIST"] if item["ID"] in {str(v) for v in values if v}]
        return ", ".join(names)

    def md5_tag(self, tag: str) -> str:
        client = (self.app or {}).get("client_id", "")
        return f"MP|{hashlib.md5(client.encode()).hexdigest()[:5]}|{tag}"


# --- the authorization server (one for every portal of the process) -----------------------------
def event_scope(scope: str) -> str:
    """An event's auth[scope] lists the granted scopes separated by spaces
    (api-reference/common/events/on-app-update.md, on-app-install.md)."""
    return " ".join(part for part in re.split(r"[\s,]+", scope or "") if part)


def auth_server_token(params: dict) -> tuple[int, dict]:
    """GET /auth/oauth/token/: refresh at whichever portal issued the refresh token."""
    token = params.get("refresh_token") or ""
    for portal in list(_PORTALS):
        with portal.lock:
            known = token in portal.refresh_tokens
        if known:
            return portal.refresh(params)
    if any(p.app and p.app["client_id"] == params.get("client_id") and p.app["client_secret"] ==
           params.get("client_secret") for p in list(_PORTALS)):
        return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
    return 401, {"error": "invalid_client", "error_description": "Invalid client credentials"}


def auth_server_app_info(params: dict) -> tuple[int, dict]:
    """/auth/rest/app.info?auth=...: the authorization server's view of a token's app and portal."""
    token = params.get("auth") or params.get("access_token") or ""
    for portal in list(_PORTALS):
        answer = portal.app_info_for_token(token)
        if answer is not None:
            return answer
    return 401, {"error": "invalid_token", "error_description": "The access token provided is invalid."}
