"""Each portal's REST budget, one for every process of the deployment: the portal's plan limits and
a leaky bucket kept in the database, so the web processes and any number of workers on any number
of machines draw on the portal's one bucket together.

Bitrix24 counts an application's requests per portal (and source address) in a leaky bucket: +1 a
request, drained `rps` a second, 503 QUERY_LIMIT_EXCEEDED above `burst` — 2/s and 50, or 5/s and 250
on Enterprise plans (official docs, limits.md). Our copy of the bucket is the row `portal_budget`
(level at stamp). A request *reserves* its place in ONE atomic statement — drain the level to now,
add one, return it — and then waits until the level it reserved is within our cap: an UPDATE ...
RETURNING is atomic on PostgreSQL (row lock) and on SQLite (one writer), so concurrent callers in
any process queue up in the order they reserved and never wait on each other's locks longer than
one statement. Time is the database's clock (statement_timestamp / julianday('now')): one clock for
every machine, so skew between workers does not leak budget.

Our pace is the portal's limits scaled by the settings (`portal_rps` per 2 req/s, `portal_burst`
under 50: the default 2.0 and 48 keep two requests of margin in the depth on every plan); tests and
benchmarks open it up with large values.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import bindparam, case, create_engine, event, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from addon.bitrix.bucket import portal_pace
from addon.models import PortalBudget, utcnow

log = logging.getLogger(__name__)

# The two plans of Bitrix24's limits page: (drain per second, bucket size).
STANDARD = (2.0, 50)
ENTERPRISE = (5.0, 250)
# How long the plan read at install or update is trusted before a worker reads it again.
PLAN_MAX_AGE_SECONDS = 86400


def plan_limits(license_code: str | None, family: str | None = None) -> tuple[float, int]:
    """The portal's (rps, burst) from app.info: LICENSE is the region and the plan ("de_ent250"),
    LICENSE_FAMILY the plan's family ("ent"). Enterprise plans are ent*, every other plan 2/50."""
    fam = (family or "").strip().lower()
    plan = (license_code or "").strip().lower().split("_", 1)[-1]
    return ENTERPRISE if fam == "ent" or plan.startswith("ent") else STANDARD


def _scale_and_margin(settings) -> tuple[float, float]:
    """The settings' pace as a factor on the plan's rate and a margin on its depth."""
    return max(float(settings.portal_rps), 0.01) / STANDARD[0], float(settings.portal_burst) - STANDARD[1]


def our_pace(settings, rps: float, burst: int) -> tuple[float, float]:
    """What we allow ourselves on a portal of (rps, burst): the settings' margin applied to its plan."""
    scale, margin = _scale_and_margin(settings)
    return rps * scale, max(float(burst) + margin, 1.0)


def _db_now(dialect: str):
    if dialect == "sqlite":
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    return literal_column("EXTRACT(EPOCH FROM statement_timestamp())")


_sqlite_engines: dict[str, object] = {}
_engines_lock = threading.Lock()


def _engine_for(services):
    """The engine the pace writes with. On SQLite its own, with a short busy timeout: a caller that
    holds the write lock itself (a REST call inside a write transaction) must not wait on itself."""
    engine = services.engine
    if engine.dialect.name != "sqlite":
        return engine
    url = str(engine.url)
    with _engines_lock:
        found = _sqlite_engines.get(url)
        if found is None:
            # No pool: a connection per statement, so none outlives a test's or a tool's database file.
            found = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5}, poolclass=NullPool)

            @event.listens_for(found, "connect")
            def _pragmas(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()

            _sqlite_engines[url] = found
        return found


def ensure_row(services, portal_id: int) -> None:
    """A budget row for the portal (standard plan until its plan is read)."""
    with services.sessions() as session:
        if session.get(PortalBudget, portal_id) is not None:
            return
        session.add(PortalBudget(portal_id=portal_id, rps=STANDARD[0], burst=STANDARD[1], level=0.0, stamp=0.0,
                                 calls=0))
        try:
            session.commit()
        except IntegrityError:  # another process made it first
            session.rollback()


class SharedPace:
    """One portal's pace, drawn from its row in `portal_budget`. `acquire()` before every request."""

    def __init__(self, services, portal_id: int, *, sleep: Callable[[float], None] = time.sleep):
        self.services = services
        self.portal_id = portal_id
        self._sleep = sleep
        self._fallback = None
        engine = _engine_for(services)
        self._engine = engine
        scale, margin = _scale_and_margin(services.settings)
        now = _db_now(engine.dialect.name)
        t = PortalBudget.__table__
        drained = t.c.level - (now - t.c.stamp) * t.c.rps * scale
        self._reserve = (update(t).where(t.c.portal_id == bindparam("pid"))
                         .values(level=case((drained > 0, drained), else_=0.0) + 1, stamp=now, calls=t.c.calls + 1)
                         .returning(t.c.level, t.c.rps * scale, t.c.burst + margin))

    def acquire(self) -> float:
        """Reserve one request in the portal's bucket and wait for its turn. Returns the time waited."""
        if self._fallback is not None:
            return self._fallback.acquire()
        try:
            row = self._take()
            if row is None:
                ensure_row(self.services, self.portal_id)
                row = self._take()
        except OperationalError as exc:
            # SQLite busy past the timeout: keep calling under this process's own pace rather than
            # failing the job (one web and one worker process, as SQLite deployments run).
            log.warning("portal %s: the shared pace is unavailable (%s); pacing in this process", self.portal_id,
                        exc.orig)
            self._fallback = portal_pace(f"portal:{self.portal_id}", self.services.settings.portal_rps,
                                         self.services.settings.portal_burst)
            return self._fallback.acquire()
        level, rps, cap = row
        wait = (float(level) - float(cap)) / max(float(rps), 0.01)
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0

    def _take(self):
        with self._engine.begin() as conn:
            return conn.execute(self._reserve, {"pid": self.portal_id}).first()

    def limited(self) -> None:
        """The portal answered 503 QUERY_LIMIT_EXCEEDED: note it for `worker status`, and count the
        bucket as full (the portal's word beats our copy: another app on our address, a clock)."""
        with self._engine.begin() as conn:
            conn.execute(text("UPDATE portal_budget SET limited_at = :at, level = CASE WHEN level < burst "
                              "THEN burst ELSE level END WHERE portal_id = :pid"),
                         {"at": utcnow(), "pid": self.portal_id})


def shared_pace(services, portal_id: int) -> SharedPace:
    return SharedPace(services, portal_id)


def store_plan(services, portal_id: int, app_info: dict | None) -> tuple[float, int]:
    """Keep the portal's plan (app.info LICENSE / LICENSE_FAMILY) and its limits on its budget row."""
    info = app_info if isinstance(app_info, dict) else {}
    license_code = str(info.get("LICENSE") or "") or None
    rps, burst = plan_limits(license_code, str(info.get("LICENSE_FAMILY") or ""))
    ensure_row(services, portal_id)
    with services.sessions() as session:
        row = session.get(PortalBudget, portal_id, with_for_update=True)
        row.plan, row.rps, row.burst, row.plan_read_at = license_code, rps, burst, utcnow()
        session.commit()
    return rps, burst


def read_plan(services, portal_id: int, client) -> tuple[float, int]:
    """Ask the portal for its plan (app.info) and store it: on install, on update, and by a worker
    when the stored one is older than a day (a portal changes plans)."""
    return store_plan(services, portal_id, client.call("app.info"))


@dataclass(frozen=True)
class BudgetState:
    """What a worker's unit reads of the portal's budget row before its work (one statement)."""

    plan_stale: bool  # no plan read yet, or read over a day ago: ask app.info again
    has_error: bool  # a last error is noted: the unit clears it once its work went through


def budget_state(services, portal_id: int) -> BudgetState:
    t = PortalBudget.__table__
    with services.sessions() as session:
        row = session.execute(select(t.c.plan_read_at, t.c.last_error).where(t.c.portal_id == portal_id)).first()
    if row is None:
        return BudgetState(plan_stale=True, has_error=False)
    read_at, last_error = row
    stale = read_at is None or (utcnow() - read_at).total_seconds() > PLAN_MAX_AGE_SECONDS
    return BudgetState(plan_stale=stale, has_error=last_error is not None)


def note_error(services, portal_id: int, error: str | None) -> None:
    """The last error a worker met on the portal (None: its work went through — one UPDATE, which
    finds nothing to clear on a portal without an error)."""
    if error is None:
        with services.sessions() as session:
            session.execute(update(PortalBudget).where(PortalBudget.portal_id == portal_id,
                                                       PortalBudget.last_error.is_not(None))
                            .values(last_error=None, last_error_at=None).execution_options(synchronize_session=False))
            session.commit()
        return
    ensure_row(services, portal_id)
    with services.sessions() as session:
        row = session.get(PortalBudget, portal_id)
        if error is None and row.last_error is None:
            return
        row.last_error, row.last_error_at = (error[:2000], utcnow()) if error else (None, None)
        session.commit()
