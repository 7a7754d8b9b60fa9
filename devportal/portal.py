"""The in-memory Bitrix24 portal: its state, clock, addresses and directory, composed with the
mixins for tokens, limits, event delivery, the app's lifecycle, CRM records and robots."""
from __future__ import annotations

import hashlib
import queue
import random
import secrets
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import requests

from devportal.delivery import DeliveryMixin
from devportal.lifecycle import AppLifecycleMixin
from devportal.limits import LimitsMixin
from devportal.oauth import PORTALS, TokensMixin
from devportal.records import RecordsMixin
from devportal.robots import RobotsMixin
from devportal.seed import seed_portal

ENTITIES = ("contact", "company", "deal", "lead")


class DevPortal(TokensMixin, LimitsMixin, DeliveryMixin, AppLifecycleMixin, RecordsMixin, RobotsMixin):
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
        PORTALS.add(self)
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

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        PORTALS.discard(self)
        if self._delivery_thread is not None and self._delivery_thread.is_alive():
            self._queue.put(None)
            self._delivery_thread.join(timeout=5)
        if self._http is not None:
            self._http.close()

    # ------------------------------------------------------------------ seed
    def seed(self, **kwargs) -> dict:
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
