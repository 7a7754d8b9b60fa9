"""`nezabyt demo`: the whole product on one machine — a seeded devportal, the web app, the worker —
installed like a portal installs it, then a month of sales work simulated day by day, with a
summary of what Nezabyt did and what it cost in REST calls.

The devportal's clock and the worker's `now` move together: each simulated day the portal's clock
is set to that day and the worker's jobs run with the same instant (time is an input), so a month
takes seconds and every date the product records is the simulated one.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import secrets
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import click

TZ_NAME = "Europe/Moscow"
# Statuses of the base before the app came, by share (seed 003: most clients carry one; some none).
START_MIX = (("NEW", 0.03), ("HOT", 0.2), ("WARM", 0.25), ("COLD", 0.3), ("LOST", 0.05), (None, 0.17))
# The devportal's limit during the demo: far above the real 2/s so a month fits in two minutes.
DEMO_RPS, DEMO_BURST = 2000.0, 2000


@dataclass(frozen=True)
class DemoConfig:
    contacts: int = 12000
    companies: int = 2000
    departments: int = 3
    managers: int = 12
    days: int = 30
    seed: int = 1
    database_url: str | None = None  # None: a fresh SQLite file in a temporary folder
    calls_per_manager: int = 14  # calls a manager makes on an ordinary day, warned clients first
    forget_share: float = 0.3  # share of the warned clients a manager forgets to call
    changes_per_day: int = 20  # manual status changes a day across the company
    changes_without_call: float = 0.3  # share of them made without a call (Nezabyt reverts them)
    deals_per_day: int = 8  # new deals a day; about as many are closed
    new_clients_per_day: int = 6
    calls_per_client: float = 0.3  # the seeded six months of call history, per client
    last_day: dt.date | None = None  # the month's last day (None: today in the portal's time zone)


@dataclass
class DemoResult:
    """The figures the summary prints (read back from the database and the devportal's call log)."""

    database_url: str
    portal_id: int
    devportal_url: str
    app_url: str
    first_day: dt.date
    last_day: dt.date
    tracked_at_start: int = 0
    tracked_at_end: int = 0
    transitions: dict[str, int] = field(default_factory=dict)  # "FROM→TO" -> count
    by_cause: dict[str, int] = field(default_factory=dict)
    status_mix: dict[str, int] = field(default_factory=dict)  # current statuses at the end
    status_mix_at_start: dict[str, int] = field(default_factory=dict)
    status_mix_by_day: list[dict[str, int]] = field(default_factory=list)
    reverts: int = 0
    losses: int = 0
    transfers: int = 0
    digests_sent: int = 0
    messages_sent: int = 0
    notifications_in_portal: int = 0
    timeline_comments: int = 0
    feed_posts: int = 0
    rest_http_requests: int = 0
    rest_commands: int = 0
    rest_by_method: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)  # what the simulated managers did
    events_stored: int = 0
    events_processed: int = 0
    seconds: float = 0.0


class DemoApp:
    """The web app (`addon.web.create_app`) served by werkzeug on 127.0.0.1 in a child process, so
    storing the portal's events does not compete with the worker and the devportal for one
    interpreter lock (a production deployment runs it under gunicorn)."""

    def __init__(self, settings):
        self.settings = settings
        self.url = ""
        self._proc = None

    def start(self) -> "DemoApp":
        import json
        import os
        import subprocess
        import sys

        env = dict(os.environ, DATABASE_URL=self.settings.database_url,
                   NEZABYT_SECRET_KEY=self.settings.secret_key, NEZABYT_CLIENT_ID=self.settings.client_id,
                   NEZABYT_CLIENT_SECRET=self.settings.client_secret, **self.settings.security_environment())
        self._proc = subprocess.Popen([sys.executable, "-c", "from worker.demo import serve_app; serve_app()"],
                                      env=env, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline()
        if not line:
            raise click.ClickException("the web app did not start")
        self.url = json.loads(line)["url"]
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 — a stuck child is killed
                self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc.stdout.close()
            self._proc = None


def serve_app(host: str = "127.0.0.1") -> None:
    """The child process of DemoApp: bind a free port, tell the parent the URL, serve until ended."""
    import json
    import signal
    import sys

    from werkzeug.serving import WSGIRequestHandler, make_server

    from addon.config import Settings
    from addon.services import build_services
    from addon.web import create_app

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    holder = {}
    server = make_server(host, 0, lambda env, sr: holder["app"](env, sr), threaded=True, request_handler=Quiet)
    url = f"http://{host}:{server.server_port}"
    # The app's public URL (where the portal sends events) is this server's URL.
    services = build_services(Settings.from_env(public_url=url))
    holder["app"] = create_app(services)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="demo-app-watch", daemon=True).start()
    print(json.dumps({"url": url}), flush=True)
    try:
        server.serve_forever()
    finally:
        services.dispose()


def _exit_with_parent(parent: int) -> None:
    """The demo's web app must not outlive the demo, however the demo ended (even SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


class Demo:
    """One demo run: `setup()`, `simulate()`, `result()`, then `serve()` or `close()`."""

    def __init__(self, config: DemoConfig, say: Callable[[str], None] = print):
        self.config = config
        self.say = say
        self.rng = random.Random(config.seed)
        self.tz = ZoneInfo(TZ_NAME)
        self.today = config.last_day or dt.datetime.now(self.tz).date()
        # The month ends today, so the dates the app shows afterwards look like now.
        self.first_day = self.today - dt.timedelta(days=config.days)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.services = self.srv = self.app = None
        self.portal_id: int | None = None
        self.actions: Counter = Counter()
        self.forgotten: set[tuple[str, int]] = set()  # warned clients their manager will not call
        self.mix_by_day: list[dict[str, int]] = []
        self.started = time.monotonic()
        self.tracked_at_start = 0
        self.mix_at_start: dict[str, int] = {}

    # --- setup ---------------------------------------------------------------------------------
    def at(self, day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=self.tz)

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def setup(self) -> None:
        from addon.config import Settings
        from addon.db import upgrade_database
        from addon.services import build_services
        from devportal.server import DevPortalServer

        cfg = self.config
        url = cfg.database_url
        if url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nezabyt-demo-")
            url = f"sqlite:///{Path(self._tmp.name) / 'nezabyt-demo.sqlite3'}"
        upgrade_database(url)
        # The add-on paces itself per portal; open its pace to the demo portal's raised limit.
        # A development run against the local devportal (a private address, plain http).
        settings = Settings.from_env(database_url=url, client_id="local.nezabyt.demo",
                                     client_secret=secrets.token_hex(16), portal_rps=DEMO_RPS,
                                     portal_burst=DEMO_BURST, environment="development", allow_private_portals=True)
        self.services = build_services(settings)
        self.say(f"[{self.elapsed()}] database: {url}")

        # Tokens outlive the simulated month: the clock jumps a day at a time, so with the usual hour
        # every morning would start with a refresh; the benchmarks and tests exercise refreshing.
        self.srv = DevPortalServer(rps=DEMO_RPS, burst=DEMO_BURST, limits=True, tz=TZ_NAME,
                                   token_ttl=(cfg.days + 2) * 86400)
        self.srv.portal.set_clock(self.at(self.first_day, 8), frozen=True)
        self.srv.start()
        settings = dataclasses.replace(settings, oauth_url=self.srv.oauth_url)  # it is the authorization server too
        self.services.settings = settings
        dp = self.srv.portal
        seeded = dp.seed(departments=cfg.departments, managers=cfg.managers, contacts=cfg.contacts,
                         companies=cfg.companies, months_of_calls=6, deals=max(1, (cfg.contacts + cfg.companies) // 10),
                         rng_seed=cfg.seed, calls_per_client=cfg.calls_per_client)
        self.manager_ids = list(seeded["manager_ids"])
        self.say(f"[{self.elapsed()}] devportal {self.srv.url}: {seeded['departments']} departments, "
                 f"{seeded['managers']} managers, {seeded['contacts']} contacts, {seeded['companies']} companies, "
                 f"{seeded['deals']} deals, {seeded['calls']} calls over 6 months; rate limit raised for the demo "
                 f"to {DEMO_RPS:g}/s burst {DEMO_BURST} (Bitrix24's is 2/s burst 50: see bench/RESULTS.md)")

        self.app = DemoApp(settings).start()
        self.services.settings = dataclasses.replace(settings, public_url=self.app.url)
        answer = dp.install_app(self.app.url, settings.client_id, settings.client_secret)
        if answer["status_code"] != 200:
            raise click.ClickException(f"install failed: HTTP {answer['status_code']}: {answer['answer'][:300]}")
        dp.wait_for_deliveries(30)
        self.portal_id = self._portal_id(answer["member_id"])
        self._turn_on_demo_options()
        self.say(f"[{self.elapsed()}] web app {self.app.url}: installed as a portal installs it "
                 f"(installer POST, {len(dp.bound_events)} event handlers, status fields created); "
                 f"settings: no change without a call, lost clients opened and transferred to the supervisor, "
                 f"timeline comments and a daily live-feed post on")
        self._place_starting_statuses()
        self._index()

    def _portal_id(self, member_id: str) -> int:
        from sqlalchemy import select

        from addon.models import Portal

        with self.services.sessions() as session:
            return session.scalars(select(Portal.id).where(Portal.member_id == member_id)).one()

    def _turn_on_demo_options(self) -> None:
        from addon.models import PortalSettings
        from addon.options import Options

        with self.services.sessions() as session:
            row = session.get(PortalSettings, self.portal_id)
            opts = dataclasses.replace(Options.from_dict(row.data), require_call=True, transfer_mode="supervisor",
                                       open_to_all_on_loss=True, timeline_comments=True, feed_post=True,
                                       time_zone=TZ_NAME, notify_time="09:00")
            row.data = opts.to_dict()
            row.version += 1
            session.commit()

    def _items(self, kind: str) -> dict[str, str]:
        from addon.models import PortalSettings

        with self.services.sessions() as session:
            return dict(session.get(PortalSettings, self.portal_id).field_items[kind])

    def _place_starting_statuses(self) -> None:
        """The statuses managers had set before (as an earlier bulk load left them), each dated
        somewhere within its timer so decays spread over the month."""
        from addon.engine import STATUS_FIELD
        from addon.options import Options

        dp = self.srv.portal
        opts = Options()
        codes = [c for c, _ in START_MIX]
        weights = [w for _, w in START_MIX]
        start = self.at(self.first_day, 8)
        with dp.lock:
            for kind in ("contact", "company"):
                items = self._items(kind)
                for record in dp.records[kind].values():
                    code = self.rng.choices(codes, weights)[0]
                    if code is None:
                        continue
                    days = (opts.status(code).days if opts.status(code) else None) or 20
                    set_on = start - dt.timedelta(days=self.rng.randint(0, days - 1), hours=self.rng.randint(0, 8))
                    record[STATUS_FIELD] = items[code]
                    record["DATE_MODIFY"] = dp.iso(set_on)

    def _index(self) -> None:
        from worker.reindex import reindex

        report = reindex(self.services, self.portal_id, self.at(self.first_day, 8, 30))
        self.tracked_at_start = report.tracked
        self.mix_at_start = self._status_mix()
        self.say(f"[{self.elapsed()}] indexed the base: {report.read} clients read, {report.tracked} tracked, "
                 f"{report.untracked} without a status; {self.rest_requests()} REST requests so far")

    # --- the month -------------------------------------------------------------------------------
    def simulate(self) -> None:
        days = [self.first_day + dt.timedelta(days=n + 1) for n in range(self.config.days)]
        for n, day in enumerate(days):
            # The morning: yesterday's events first, then the daily run and the digest.
            self._run_worker(self.at(day, 9, 0))
            if n:
                self._report_day(n, days[n - 1])
            self._working_day(day)
        # The last evening: the month's final events, and the echoes of the worker's own writes.
        for _ in range(3):
            self._run_worker(self.at(days[-1], 19, 0))
            if not self._pending():
                break
        self._report_day(len(days), days[-1])

    def _report_day(self, n: int, day: dt.date) -> None:
        """A day's line, once its events are processed (the next morning's run does that)."""
        self.mix_by_day.append(self._status_mix())
        self.say(f"[{self.elapsed()}] {day.isoformat()} day {n:2d}/{self.config.days}: " + self._day_line(day))

    def _run_worker(self, now: dt.datetime) -> None:
        from worker.jobs import run_once

        dp = self.srv.portal
        dp.set_clock(now, frozen=True)
        if not dp.wait_for_deliveries(60):
            raise click.ClickException("the devportal could not deliver its events within 60 s")
        report = run_once(self.services, now)
        if report.errors:
            self.say("  worker errors: " + "; ".join(report.errors[:3]))

    def _pending(self) -> bool:
        from worker.events import has_pending

        self.srv.portal.wait_for_deliveries(60)
        return has_pending(self.services, self.portal_id)

    def _warned(self, day: dt.date) -> dict[int, list[tuple[str, int]]]:
        """Per manager, the clients Nezabyt warned about (what a manager reads in the digest)."""
        from sqlalchemy import select

        from addon.models import TrackedEntity

        out: dict[int, list[tuple[str, int]]] = defaultdict(list)
        with self.services.sessions() as session:
            rows = session.execute(select(TrackedEntity.entity_type, TrackedEntity.entity_id,
                                          TrackedEntity.assigned_by_id).where(
                TrackedEntity.portal_id == self.portal_id, TrackedEntity.warn_on <= day,
                TrackedEntity.due_on > day))
            for kind, eid, manager in rows:
                out[manager or 0].append((kind, eid))
        return out

    def _working_day(self, day: dt.date) -> None:
        from addon.engine import STATUS_FIELD

        cfg, rng, dp = self.config, self.rng, self.srv.portal
        active = [uid for uid in self.manager_ids if dp.users[uid].get("ACTIVE") in (True, "Y", "1")]
        clients: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for kind in ("contact", "company"):
            for rid, record in dp.records[kind].items():
                clients[int(record["ASSIGNED_BY_ID"])].append((kind, rid))
        warned = self._warned(day)
        minute = [0]

        def tick():  # actions a couple of minutes apart from 10:00, never past the evening
            minute[0] += 1
            dp.set_clock(min(self.at(day, 10) + dt.timedelta(seconds=minute[0] * 150), self.at(day, 18, 59)),
                         frozen=True)

        called: list[tuple[int, str, int]] = []
        for uid in active:
            todo = []
            for client in warned.get(uid, []):
                if client in self.forgotten:
                    continue
                if rng.random() < cfg.forget_share:
                    self.forgotten.add(client)
                    self.actions["warned clients forgotten"] += 1
                else:
                    todo.append(client)
            own = clients.get(uid) or []
            extra = rng.sample(own, min(len(own), max(0, cfg.calls_per_manager - len(todo))))
            for kind, rid in (todo + extra)[: cfg.calls_per_manager]:
                tick()
                completed = rng.random() < 0.9
                dp.act_call(kind, rid, user_id=uid, completed=completed, duration=rng.randint(30, 600))
                self.actions["calls" if completed else "missed calls"] += 1
                if completed:
                    called.append((uid, kind, rid))
        # Status changes: most after a call (kept), some without one (Nezabyt reverts them).
        items = {k: self._items(k) for k in ("contact", "company")}
        for _ in range(cfg.changes_per_day):
            tick()
            if called and rng.random() >= cfg.changes_without_call:
                uid, kind, rid = rng.choice(called)
                self.actions["status changes after a call"] += 1
            else:
                kind = rng.choice(("contact", "contact", "company"))
                rid = rng.choice(list(dp.records[kind]))
                uid = int(dp.records[kind][rid]["ASSIGNED_BY_ID"])
                self.actions["status changes without a call"] += 1
            code = rng.choice(("HOT", "HOT", "WARM", "COLD"))
            dp.act_update(kind, rid, {STATUS_FIELD: items[kind][code]}, user_id=uid)
        # Deals: new ones on called clients (IN_WORK), open ones won or lost.
        for _ in range(cfg.deals_per_day):
            if not called:
                break
            tick()
            uid, kind, rid = rng.choice(called)
            fields = {"TITLE": f"Сделка {day.isoformat()}", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": uid,
                      "CONTACT_ID" if kind == "contact" else "COMPANY_ID": rid}
            dp.act_add("deal", fields, user_id=uid)
            self.actions["deals opened"] += 1
        open_deals = [rid for rid, d in dp.records["deal"].items()
                      if not str(d.get("STAGE_ID", "")).endswith(("WON", "LOSE", "APOLOGY"))]
        for rid in rng.sample(open_deals, min(len(open_deals), cfg.deals_per_day)):
            tick()
            won = rng.random() < 0.5
            dp.act_close_deal(rid, won=won, user_id=int(dp.records["deal"][rid]["ASSIGNED_BY_ID"]))
            self.actions["deals won" if won else "deals lost"] += 1
        for _ in range(cfg.new_clients_per_day):
            tick()
            uid = rng.choice(active)
            dp.act_add("contact", {"NAME": "Новый", "LAST_NAME": f"Клиент {day.day}-{minute[0]}",
                                   "ASSIGNED_BY_ID": uid,
                                   "PHONE": [{"VALUE": f"+7 900 {rng.randint(1000000, 9999999)}",
                                              "VALUE_TYPE": "WORK"}]}, user_id=uid)
            self.actions["new clients"] += 1

    def _status_mix(self) -> dict[str, int]:
        from sqlalchemy import func, select

        from addon.models import TrackedEntity

        with self.services.sessions() as session:
            rows = session.execute(select(TrackedEntity.status, func.count()).where(
                TrackedEntity.portal_id == self.portal_id, TrackedEntity.status.is_not(None))
                .group_by(TrackedEntity.status))
            return {status: n for status, n in rows}

    def rest_requests(self) -> int:
        """HTTP requests the app made to the portal (a batch of 50 commands is one request)."""
        return sum(1 for c in list(self.srv.portal.calls) if not c.get("in_batch"))

    def _day_line(self, day: dt.date) -> str:
        from sqlalchemy import func, select

        from addon.models import JobRun, StatusHistory

        with self.services.sessions() as session:
            causes = dict(session.execute(select(StatusHistory.cause, func.count()).where(
                StatusHistory.portal_id == self.portal_id, StatusHistory.changed_on == day)
                .group_by(StatusHistory.cause)).all())
            job = session.scalar(select(JobRun).where(JobRun.key == f"daily:{self.portal_id}:{day.isoformat()}"))
            summary = (job.summary or {}) if job is not None else {}
        return (f"{causes.get('decay', 0)} decays, {causes.get('manager', 0)} manual, "
                f"{causes.get('revert', 0)} reverted, {causes.get('deal', 0)} by deals, "
                f"{summary.get('losses', 0)} lost, {summary.get('transfers', 0)} transferred, "
                f"{summary.get('messages_sent', 0)} messages; {self.rest_requests()} REST requests in all")

    # --- the summary -----------------------------------------------------------------------------
    def result(self) -> DemoResult:
        from sqlalchemy import func, select

        from addon.models import JobRun, NotificationLog, StatusHistory, StoredEvent, TrackedEntity

        dp = self.srv.portal
        res = DemoResult(database_url=self.services.settings.database_url, portal_id=self.portal_id,
                         devportal_url=self.srv.url, app_url=self.app.url, first_day=self.first_day,
                         last_day=self.first_day + dt.timedelta(days=self.config.days),
                         tracked_at_start=self.tracked_at_start)
        with self.services.sessions() as session:
            pid = self.portal_id
            lines = session.execute(select(StatusHistory.from_status, StatusHistory.to_status, StatusHistory.cause,
                                           func.count()).where(
                StatusHistory.portal_id == pid, StatusHistory.changed_on > self.first_day)
                .group_by(StatusHistory.from_status, StatusHistory.to_status, StatusHistory.cause)).all()
            transitions: Counter = Counter()
            causes: Counter = Counter()
            for frm, to, cause, n in lines:
                transitions[f"{frm or 'EMPTY'}→{to or 'EMPTY'}"] += n
                causes[cause] += n
            res.transitions = dict(transitions.most_common())
            res.by_cause = dict(causes.most_common())
            res.reverts = causes.get("revert", 0)
            res.losses = sum(n for frm, to, cause, n in lines if to == "LOST")
            runs = session.scalars(select(JobRun).where(JobRun.portal_id == pid, JobRun.kind == "daily")).all()
            res.transfers = sum(int((r.summary or {}).get("transfers", 0)) for r in runs)
            res.digests_sent = session.scalar(select(func.count()).select_from(NotificationLog).where(
                NotificationLog.portal_id == pid, NotificationLog.status == "sent",
                NotificationLog.kind == "digest")) or 0
            res.messages_sent = session.scalar(select(func.count()).select_from(NotificationLog).where(
                NotificationLog.portal_id == pid, NotificationLog.status == "sent")) or 0
            res.tracked_at_end = session.scalar(select(func.count()).select_from(TrackedEntity).where(
                TrackedEntity.portal_id == pid, TrackedEntity.status.is_not(None))) or 0
            res.events_stored = session.scalar(select(func.count()).select_from(StoredEvent).where(
                StoredEvent.portal_id == pid)) or 0
            res.events_processed = session.scalar(select(func.count()).select_from(StoredEvent).where(
                StoredEvent.portal_id == pid, StoredEvent.processed_at.is_not(None))) or 0
        res.status_mix = self._status_mix()
        res.status_mix_at_start = dict(self.mix_at_start)
        res.status_mix_by_day = list(self.mix_by_day)
        calls = list(dp.calls)
        outer = [c for c in calls if not c.get("in_batch")]
        res.rest_http_requests = len(outer)
        res.rest_commands = sum(1 for c in calls if c.get("in_batch")) + sum(1 for c in outer if c["method"] != "batch")
        res.rest_by_method = dict(Counter(c["method"] for c in outer).most_common())
        res.notifications_in_portal = len(dp.notifications)
        res.timeline_comments = len(dp.timeline_comments)
        res.feed_posts = len(dp.blog_posts)
        res.actions = dict(self.actions)
        res.seconds = time.monotonic() - self.started
        return res

    def serve(self, every: float = 5.0, stop: threading.Event | None = None) -> None:
        """Keep the portal and the app up; the worker drains events and runs the daily run on the
        portal's clock, which now runs on from the last simulated moment."""
        from worker.jobs import drain_and_run

        dp = self.srv.portal
        dp.set_clock(dp.now(), frozen=False)
        stop = stop or threading.Event()
        try:
            while not stop.wait(every):
                report = drain_and_run(self.services, dp.now())
                if report.events or report.daily_runs:
                    self.say(f"[{dp.now():%Y-%m-%d %H:%M}] worker: {report.events} events, "
                             f"{report.daily_runs} daily runs")
        except KeyboardInterrupt:
            self.say("stopped")

    def close(self) -> None:
        if self.app is not None:
            self.app.stop()
        if self.srv is not None:
            self.srv.stop()
        if self.services is not None:
            self.services.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()


def summary_text(res: DemoResult, status_names: dict[str, str] | None = None) -> str:
    names = status_names or {}

    def name(code: str) -> str:
        return f"{names.get(code, code)}" if code in names else code

    out = [f"Nezabyt demo: {res.first_day.isoformat()} .. {res.last_day.isoformat()} "
           f"({(res.last_day - res.first_day).days} days) in {res.seconds:.0f} s",
           f"  clients tracked: {res.tracked_at_start} at the start, {res.tracked_at_end} at the end",
           "  what the managers did: " + ", ".join(f"{k} {v}" for k, v in sorted(res.actions.items())),
           f"  events: {res.events_stored} stored, {res.events_processed} processed",
           "  transitions by cause: " + ", ".join(f"{k} {v}" for k, v in res.by_cause.items()),
           "  transitions by status:"]
    for key, n in res.transitions.items():
        frm, to = key.split("→")
        out.append(f"    {name(frm):>10} → {name(to):<10} {n}")
    out += [f"  reverts (changed without a call): {res.reverts}",
            f"  losses: {res.losses}; transferred to the supervisor: {res.transfers}",
            f"  digests sent: {res.digests_sent} ({res.messages_sent} messages in all, "
            f"{res.notifications_in_portal} notifications in the portal); {res.timeline_comments} timeline comments, "
            f"{res.feed_posts} live-feed posts",
            f"  REST calls spent: {res.rest_http_requests} HTTP requests carrying {res.rest_commands} commands "
            "(" + ", ".join(f"{m} {n}" for m, n in list(res.rest_by_method.items())[:6]) + ")",
            "  statuses now: " + ", ".join(f"{name(k)} {v}" for k, v in sorted(res.status_mix.items()))]
    return "\n".join(out)


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> tuple[Demo, DemoResult]:
    """Set up, simulate and summarise; the caller serves or closes the returned Demo."""
    demo = Demo(config, say)
    try:
        demo.setup()
        demo.simulate()
        return demo, demo.result()
    except BaseException:
        demo.close()
        raise


@click.command("demo")
@click.option("--contacts", default=12000, show_default=True, type=int)
@click.option("--companies", default=2000, show_default=True, type=int)
@click.option("--managers", default=12, show_default=True, type=int)
@click.option("--days", default=30, show_default=True, type=int, help="days of work to simulate")
@click.option("--seed", default=1, show_default=True, type=int, help="random seed of the data and the month")
@click.option("--last-day", default=None, type=click.DateTime(["%Y-%m-%d"]),
              help="the simulated month's last day (default: today)")
@click.option("--database-url", default=None, help="where to keep the data (default: a fresh SQLite file in a "
                                                   "temporary folder, removed on exit)")
@click.option("--exit", "exit_after", is_flag=True, help="end after the summary instead of serving")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="also write the summary's figures (and the status mix day by day) to this JSON file")
def demo_command(contacts, companies, managers, days, seed, last_day, database_url, exit_after, report_path):
    """Run Nezabyt end to end on this machine: a seeded local portal, the app installed, a month simulated."""
    import logging

    logging.getLogger("fast_bitrix24").setLevel(logging.WARNING)
    config = DemoConfig(contacts=contacts, companies=companies, managers=managers, days=days, seed=seed,
                        database_url=database_url, last_day=last_day.date() if last_day else None)
    demo, res = run_demo(config, click.echo)
    try:
        from addon.options import Options

        click.echo("")
        click.echo(summary_text(res, {s.code: s.name for s in Options().statuses}))
        if report_path:
            import json

            Path(report_path).write_text(json.dumps(dataclasses.asdict(res), ensure_ascii=False, indent=1,
                                                    default=str), encoding="utf-8")
        if exit_after:
            return
        click.echo(f"\nThe portal with the app inside: {res.devportal_url}/app  (CRM: {res.devportal_url}/)")
        click.echo("Serving; the worker keeps running on the portal's clock. Ctrl-C to stop.")
        import signal

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a service manager's stop ends it cleanly too
        demo.serve(stop=stop)
    finally:
        demo.close()
