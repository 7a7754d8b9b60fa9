"""Shared pieces of the benchmarks: a fresh database, a devportal with Nezabyt installed (the web
app in a child process, as in `nezabyt demo`), the devportal's call log read as REST figures, and
the machine's description for RESULTS.md."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Europe/Moscow")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
READ_SUFFIXES = (".get", ".list", ".fields", ".info", ".current", ".admin", ".findbycomm", ".time")


def at(day: dt.date, hour: int = 9, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=TZ)


def fresh_database(url: str | None, name: str) -> str:
    """`url` (PostgreSQL: dropped and created again) or, when None, the bench's PostgreSQL
    database `name`; "sqlite" gives a new SQLite file, a sqlite:/// URL is used as it is (a new
    file). Migrated to head."""
    from addon.db import upgrade_database

    if url == "sqlite":
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='nezabyt-bench-')) / 'bench.sqlite3'}"
    if url is not None and url.startswith("sqlite"):
        upgrade_database(url)
        return url
    url = url or DEFAULT_PG.format(name=name)
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{u.database}"'))
    admin.dispose()
    upgrade_database(url)
    return url


def settle_disk(url: str) -> None:
    """Write out what earlier work left dirty (PostgreSQL's CHECKPOINT, then the kernel's sync), so
    a latency measurement does not absorb the writeback of a previous benchmark: the bulk load's
    100,000 rows, flushed by the next CREATE DATABASE, reach the disk over the following seconds and
    every commit's WAL flush waits behind them."""
    from sqlalchemy import create_engine, text

    if not url.startswith("sqlite"):
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(text("CHECKPOINT"))
        engine.dispose()
    os.sync()


def bench_settings(url: str, **overrides):
    from addon.config import Settings

    # A development run against the local devportal: its address is private and plain http.
    return Settings.from_env(database_url=url, client_id="local.nezabyt.bench", client_secret=secrets.token_hex(12),
                             secret_key="bench-secret-key", environment="development", allow_private_portals=True,
                             **overrides)


class Stack:
    """A devportal (in this process) with Nezabyt installed by the installer POST."""

    def __init__(self, settings, *, rps: float = 2.0, burst: int = 50, limits: bool = True, token_ttl: int = 86400 * 30):
        from addon.services import build_services
        from devportal.server import DevPortalServer

        self.settings = settings
        self.services = build_services(settings)
        self.srv = DevPortalServer(rps=rps, burst=burst, limits=limits, tz="Europe/Moscow", token_ttl=token_ttl)
        self.dp = self.srv.portal
        self.app = None
        self.portal_id: int | None = None

    def start(self, clock: dt.datetime) -> "Stack":
        self.dp.set_clock(clock, frozen=True)
        self.srv.start()
        # The devportal is the authorization server too: token refreshes go there.
        self.settings = dataclasses.replace(self.settings, oauth_url=self.srv.oauth_url)
        self.services.settings = dataclasses.replace(self.services.settings, oauth_url=self.srv.oauth_url)
        return self

    def install(self, *, unbind_events: bool = False) -> int:
        """Install through the installer POST (the manifest creates the status fields). With
        `unbind_events` the portal stops sending events afterwards: a bench that measures a job's
        own REST traffic should not also measure the web app storing the job's echoes."""
        from sqlalchemy import select

        from addon.models import Portal
        from demo.app import DemoApp

        limits = self.dp.limits_enabled
        self.dp.set_limits(enabled=False)  # setting up is not what is measured
        self.app = DemoApp(self.settings).start()
        self.services.settings = dataclasses.replace(self.services.settings, public_url=self.app.url)
        answer = self.dp.install_app(self.app.url, self.settings.client_id, self.settings.client_secret)
        if answer["status_code"] != 200:
            raise SystemExit(f"install failed: {answer['status_code']} {answer['answer'][:300]}")
        self.dp.wait_for_deliveries(30)
        if unbind_events:
            with self.dp.lock:
                self.dp.bound_events[:] = [h for h in self.dp.bound_events if h["event"] == "ONAPPUNINSTALL"]
        self.dp.set_limits(enabled=limits)
        with self.services.sessions() as session:
            self.portal_id = session.scalars(select(Portal.id).where(Portal.member_id == answer["member_id"])).one()
        return self.portal_id

    def set_options(self, **overrides) -> None:
        from addon.models import PortalSettings
        from addon.options import Options

        with self.services.sessions() as session:
            row = session.get(PortalSettings, self.portal_id)
            row.data = dataclasses.replace(Options.from_dict(row.data), **overrides).to_dict()
            row.version += 1
            session.commit()

    def items(self, kind: str = "contact") -> dict[str, str]:
        from addon.models import PortalSettings

        with self.services.sessions() as session:
            return dict(session.get(PortalSettings, self.portal_id).field_items[kind])

    def mark(self) -> int:
        return len(self.dp.calls)

    def rest_since(self, mark: int) -> dict:
        return rest_figures(self.dp.calls[mark:])

    def close(self) -> None:
        if self.app is not None:
            self.app.stop()
        self.srv.stop()
        self.services.dispose()


def rest_figures(calls: list[dict]) -> dict:
    """HTTP requests, commands, writes (commands that change the portal or send something) and the
    floor ceil(writes / 50), from a slice of the devportal's call log."""
    outer = [c for c in calls if not c.get("in_batch")]
    commands = [c for c in calls if c.get("in_batch")] + [c for c in outer if c["method"] != "batch"]
    writes = [c for c in commands if not c["method"].endswith(READ_SUFFIXES)]
    by_method: dict[str, int] = {}
    for c in outer:
        by_method[c["method"]] = by_method.get(c["method"], 0) + 1
    return {"http_requests": len(outer), "commands": len(commands), "writes": len(writes),
            "floor": math.ceil(len(writes) / 50), "errors": sum(1 for c in outer if c.get("error")),
            "by_method": dict(sorted(by_method.items(), key=lambda kv: -kv[1]))}


def rate_floor_seconds(calls: int, rps: float = 2.0, burst: int = 50) -> float:
    """What a perfect client needs at the portal's leaky bucket: (calls - burst) / rate."""
    return max(0.0, (calls - burst) / rps)


def machine() -> dict:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    pg = "?"
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(DEFAULT_PG.format(name="postgres"))
        with engine.connect() as c:
            pg = c.execute(text("SHOW server_version")).scalar_one()
        engine.dispose()
    except Exception:  # noqa: BLE001 — the description is best effort
        pass
    return {"nproc": run(["nproc"]), "free_h": run(["free", "-h"]), "python": platform.python_version(),
            "postgresql": pg, "platform": platform.platform(), "cpu": _cpu_model()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def emit(result: dict) -> None:
    """The last line of a bench's output is its JSON result (bench/run_all.py reads it)."""
    print(json.dumps(result, ensure_ascii=False, default=str), flush=True)


def progress(name: str):
    def say(message: str) -> None:
        print(f"  [{name}] {message}", file=sys.stderr, flush=True)
    return say


def env_for_child(settings) -> dict:
    return dict(os.environ, DATABASE_URL=settings.database_url, NEZABYT_SECRET_KEY=settings.secret_key,
                NEZABYT_CLIENT_ID=settings.client_id, NEZABYT_CLIENT_SECRET=settings.client_secret,
                **settings.security_environment())
