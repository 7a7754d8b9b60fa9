"""One demo run: the devportal seeded, the app installed as a portal installs it, a month of
managers' work simulated day by day with the worker's jobs run on the portal's clock, then served."""
from __future__ import annotations

import dataclasses
import datetime as dt
import random
import secrets
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import click
from sqlalchemy import func, select

from addon.config import Settings
from addon.db import upgrade_database
from addon.engine import STATUS_FIELD
from addon.models import JobRun, Portal, PortalSettings, StatusHistory, TrackedEntity
from addon.options import Options
from addon.services import build_services
from demo.app import DemoApp
from demo.config import DEMO_BURST, DEMO_RPS, START_MIX, TZ_NAME, DemoConfig, DemoResult
from demo.report import read_result
from devportal.server import DevPortalServer
from worker.events import has_pending
from worker.jobs import run_once
from worker.reindex import reindex
from worker.schedule import SCHEDULE, run_job


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
        with self.services.sessions() as session:
            return session.scalars(select(Portal.id).where(Portal.member_id == member_id)).one()

    def _turn_on_demo_options(self) -> None:
        with self.services.sessions() as session:
            row = session.get(PortalSettings, self.portal_id)
            opts = dataclasses.replace(Options.from_dict(row.data), require_call=True, transfer_mode="supervisor",
                                       open_to_all_on_loss=True, timeline_comments=True, feed_post=True,
                                       time_zone=TZ_NAME, notify_time="09:00")
            row.data = opts.to_dict()
            row.version += 1
            session.commit()

    def _items(self, kind: str) -> dict[str, str]:
        with self.services.sessions() as session:
            return dict(session.get(PortalSettings, self.portal_id).field_items[kind])

    def _place_starting_statuses(self) -> None:
        """The statuses managers had set before (as an earlier bulk load left them), each dated
        somewhere within its timer so decays spread over the month."""
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
        report = reindex(self.services, self.portal_id, self.at(self.first_day, 8, 30))
        self.tracked_at_start = report.tracked
        self.mix_at_start = self.status_mix()
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
        self.mix_by_day.append(self.status_mix())
        self.say(f"[{self.elapsed()}] {day.isoformat()} day {n:2d}/{self.config.days}: " + self._day_line(day))

    def _run_worker(self, now: dt.datetime) -> None:
        dp = self.srv.portal
        dp.set_clock(now, frozen=True)
        if not dp.wait_for_deliveries(60):
            raise click.ClickException("the devportal could not deliver its events within 60 s")
        report = run_once(self.services, now)
        if report.errors:
            self.say("  worker errors: " + "; ".join(report.errors[:3]))

    def _pending(self) -> bool:
        self.srv.portal.wait_for_deliveries(60)
        return has_pending(self.services, self.portal_id)

    def _warned(self, day: dt.date) -> dict[int, list[tuple[str, int]]]:
        """Per manager, the clients Nezabyt warned about (what a manager reads in the digest)."""
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

    def status_mix(self) -> dict[str, int]:
        with self.services.sessions() as session:
            rows = session.execute(select(TrackedEntity.status, func.count()).where(
                TrackedEntity.portal_id == self.portal_id, TrackedEntity.status.is_not(None))
                .group_by(TrackedEntity.status))
            return {status: n for status, n in rows}

    def rest_requests(self) -> int:
        """HTTP requests the app made to the portal (a batch of 50 commands is one request)."""
        return sum(1 for c in list(self.srv.portal.calls) if not c.get("in_batch"))

    def _day_line(self, day: dt.date) -> str:
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
        return read_result(self)

    def serve(self, speed: float = 1.0, stop: threading.Event | None = None) -> None:
        """Keep the portal and the app up, with the worker's own schedule (worker.schedule.SCHEDULE:
        events and daily runs, reconcile, robots, the re-index and bulk loads queued from the
        settings page) run on the portal's clock, which now runs on from the last simulated moment.
        `speed` divides every job's interval (a test runs the schedule a hundred times faster)."""
        dp = self.srv.portal
        dp.set_clock(dp.now(), frozen=False)
        stop = stop or threading.Event()
        due = {job.name: 0.0 for job in SCHEDULE}  # monotonic seconds each job is next due at
        try:
            while not stop.is_set():
                for job in SCHEDULE:
                    if stop.is_set() or time.monotonic() < due[job.name]:
                        continue
                    report = run_job(self.services, job, clock=dp.now)
                    due[job.name] = time.monotonic() + job.every.total_seconds() / speed
                    line = _worker_line(report)
                    if line:
                        self.say(f"[{dp.now():%Y-%m-%d %H:%M}] worker ({job.name}): {line}")
                stop.wait(max(0.01, min(due.values()) - time.monotonic()))
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


def _worker_line(report) -> str:
    """What a scheduled job did, when it did anything (a CycleReport's non-zero figures)."""
    if report is None:
        return ""
    figures = [(name, getattr(report, name, 0)) for name in
               ("events", "daily_runs", "jobs", "robot_calls", "timers")]
    parts = [f"{name.replace('_', ' ')} {n}" for name, n in figures if n]
    parts += [f"error: {e}" for e in (getattr(report, "errors", None) or [])[:3]]
    return ", ".join(parts)


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
