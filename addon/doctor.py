"""`nezabyt doctor`: is this deployment healthy? Each check is a small function returning a Check
(✓ or ✗, what it found, and for ✗ the fix in one line); `run_checks` runs them all, the CLI
(addon.ops_cli) prints them. Portal checks spend a handful of REST calls per portal."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import requests
from sqlalchemy import func, select

from addon.models import (
    PORTAL_ACTIVE,
    PORTAL_UNINSTALLED,
    JobRun,
    NotificationLog,
    Outbox,
    Portal,
    PortalSettings,
    StoredEvent,
    naive_utc,
)

MIN_SECRET_KEY_LENGTH = 32
# addon.config's stand-in when NEZABYT_SECRET_KEY is not set (development only).
DEVELOPMENT_SECRET_KEY = "nezabyt-development-secret-change-me"
HEARTBEAT_WITHIN = dt.timedelta(minutes=1)
EVENTS_WITHIN = dt.timedelta(days=1)

# The scopes Nezabyt asks for, what each is used for (docs/deploy.md lists the same), and whether
# the app can work without it. Each method's scope is the one its page in the REST docs names.
SCOPES: dict[str, tuple[str, bool]] = {
    "crm": ("contacts, companies, deals, leads, calls, the status fields, timeline comments, the "
            "CRM card tabs (crm.*)", True),
    "user": ("managers and their supervisors for digests and transfers (user.get)", True),
    "department": ("the department tree: who supervises whom (department.get)", True),
    "im": ("the daily digest and warnings as notifications (im.notify.system.add)", True),
    "task": ("tasks the robots set for managers (tasks.task.add)", True),
    "log": ("the optional live-feed post (log.blogpost.add)", True),
    "bizproc": ("the pipeline robots (bizproc.robot.*, bizproc.event.send)", True),
    "placement": ("the Nezabyt tab in contact and company cards (placement.bind)", True),
    "telephony": ("optional: a finished call counts at once (ONVOXIMPLANTCALLEND); without it the "
                  "call activity's own events do", False),
}
REQUIRED_SCOPES = tuple(name for name, (_, required) in SCOPES.items() if required)
GUIDE_SCOPE = ",".join(SCOPES)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""
    portal: str | None = None  # the portal's domain, for per-portal checks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)


# --- the deployment -------------------------------------------------------------------------------

def check_secret_key(settings) -> Check:
    key = getattr(settings, "secret_key", "") or ""
    name = "secret key"
    how = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    if not key or key == DEVELOPMENT_SECRET_KEY:
        return Check(name, False, "NEZABYT_SECRET_KEY is not set: the public development key is in use",
                     f"set NEZABYT_SECRET_KEY to a new random key: {how}")
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return Check(name, False, f"{len(key)} characters, fewer than {MIN_SECRET_KEY_LENGTH}",
                     f"make a longer key ({how}) and switch to it with `nezabyt keys rotate` (docs/deploy.md)")
    previous = getattr(settings, "previous_secret_keys", ()) or ()
    extra = f"; {len(previous)} previous key(s) still accepted for reading" if previous else ""
    return Check(name, True, f"set, {len(key)} characters{extra}")


def check_public_url_https(settings) -> Check:
    url = getattr(settings, "public_url", "") or ""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return Check("public URL is https", False, url or "(not set)",
                     "put the app behind a TLS proxy and set NEZABYT_PUBLIC_URL=https://<your domain>")
    return Check("public URL is https", True, url)


def check_public_url_answers(settings, get: Callable[..., Any] = requests.get) -> Check:
    """GET <public URL>/healthz from here: catches DNS, proxy and certificate mistakes (a portal
    is outside, so this proves the way in only as far as this machine can tell)."""
    url = f"{(getattr(settings, 'public_url', '') or '').rstrip('/')}/healthz"
    name = "public URL answers"
    try:
        response = get(url, timeout=5)
        body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
    except requests.RequestException as exc:
        return Check(name, False, f"{url}: {type(exc).__name__} ({_reason(exc)})",
                     "check DNS, the proxy and its certificate, and that `web` is running")
    if response.status_code != 200 or body.get("status") != "ok":
        return Check(name, False, f"{url}: HTTP {response.status_code} {str(body or response.text)[:120]}",
                     "the proxy must pass requests to `web`; /healthz also fails when the database is down")
    return Check(name, True, f"{url}: ok")


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests error, short (its own text nests every layer)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return str(exc)[:100]


def check_database(services) -> Check:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from addon.db import alembic_config

    name = "database migrated"
    url = services.engine.url.render_as_string(hide_password=True)
    try:
        with services.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # noqa: BLE001 — the check reports whatever stops the connection
        return Check(name, False, f"{url}: {type(exc).__name__}: {str(exc)[:160]}",
                     "check DATABASE_URL and that the database server is running")
    heads = set(ScriptDirectory.from_config(alembic_config(str(services.engine.url))).get_heads())
    if current != heads:
        return Check(name, False, f"{url} at {', '.join(sorted(current)) or 'no revision'}, "
                                  f"the code needs {', '.join(sorted(heads))}",
                     "run the release step: `nezabyt db upgrade`")
    return Check(name, True, f"{url} at {', '.join(sorted(heads))}")


def check_worker(services, now: dt.datetime) -> Check:
    from addon.heartbeat import last_beat

    name = "worker heartbeat"
    try:
        newest = last_beat(services)
    except Exception as exc:  # noqa: BLE001 — e.g. the table is missing before the migration
        return Check(name, False, f"{type(exc).__name__}: {str(exc)[:160]}",
                     "run `nezabyt db upgrade`, then start `nezabyt worker`")
    if newest is None:
        return Check(name, False, "no worker has ever reported",
                     "start the worker: `nezabyt worker` (one process or more)")
    worker_id, at = newest
    age = _utc(now) - at
    if age > HEARTBEAT_WITHIN:
        return Check(name, False, f"last beat {int(age.total_seconds())} s ago from {worker_id}",
                     "the worker is down or stuck: check its log and restart `nezabyt worker`")
    return Check(name, True, f"{max(int(age.total_seconds()), 0)} s ago from {worker_id}")


# --- one portal ------------------------------------------------------------------------------------

@dataclass
class PortalProbe:
    """What the portal answered, read once for all of a portal's checks."""

    granted: list[str] | None = None
    error: str | None = None
    handlers: list[dict] | None = None
    robots: list[str] | None = None
    fields: dict[str, dict | None] | None = None


def probe_portal(services, portal_id: int, entity_types) -> PortalProbe:
    """The REST calls of a portal's checks: scope (also proves the token), event.get,
    bizproc.robot.list, and the status field of each tracked entity type."""
    from addon.bitrix.client import PortalClient  # the one place doctor speaks REST
    from addon.bitrix.errors import PortalError
    from install.manifest_data import STATUS_FIELD

    probe = PortalProbe()
    with PortalClient(services, portal_id) as client:
        try:
            probe.granted = [str(s).strip().lower() for s in (client.call("scope") or [])]
        except PortalError as exc:
            probe.error = f"{exc.code} {exc.description}".strip()
            return probe
        probe.handlers = client.call("event.get") or []
        try:
            probe.robots = [str(code) for code in (client.call("bizproc.robot.list") or [])]
        except PortalError:
            probe.robots = None  # no bizproc scope: the scope check tells
        probe.fields = {}
        for entity in entity_types:
            rows = client.call(f"crm.{entity}.userfield.list", {"filter": {"FIELD_NAME": STATUS_FIELD}}) or []
            probe.fields[entity] = next((r for r in rows if str(r.get("FIELD_NAME", "")).upper() == STATUS_FIELD), None)
    return probe


def check_tokens(probe: PortalProbe) -> Check:
    if probe.error is not None:
        return Check("tokens valid", False, probe.error,
                     "an administrator opens the app in the portal (or reinstalls it) to give it new tokens")
    return Check("tokens valid", True, "the portal answered")


def check_scopes(probe: PortalProbe) -> Check:
    granted = set(probe.granted or ())
    missing = [s for s in REQUIRED_SCOPES if s not in granted]
    if missing:
        return Check("scopes granted", False, f"missing {', '.join(missing)} (granted: {', '.join(sorted(granted))})",
                     "add them in the app's settings on the portal and reinstall it (docs/deploy.md#register)")
    optional = [s for s in SCOPES if s not in REQUIRED_SCOPES and s not in granted]
    note = f"; optional not granted: {', '.join(optional)}" if optional else ""
    return Check("scopes granted", True, "all needed" + note)


def check_event_handlers(probe: PortalProbe, public_url: str) -> Check:
    from install.manifest_data import desired_events

    desired = desired_events(public_url, ",".join(probe.granted or ()))
    online = [h for h in probe.handlers or () if str(h.get("offline", 0)) not in ("1", "True", "true")]
    bound = {(str(h.get("event", "")).upper(), str(h.get("handler", ""))) for h in online}
    missing = sorted(name for name, url in desired.items() if (name, url) not in bound)
    elsewhere = sorted({url for name, url in bound if desired.get(name) != url})
    if missing or elsewhere:
        found = []
        if missing:
            found.append(f"{len(missing)} of {len(desired)} not bound to {public_url} ({', '.join(missing[:3])}…)"
                         if len(missing) > 3 else f"not bound to {public_url}: {', '.join(missing)}")
        if elsewhere:
            found.append(f"bound elsewhere: {', '.join(elsewhere[:2])}")
        return Check("event handlers", False, "; ".join(found),
                     "reinstall the app (or publish an update) so its installer binds them to NEZABYT_PUBLIC_URL")
    return Check("event handlers", True, f"{len(desired)} bound to {public_url}")


def robot_fingerprint(params: dict[str, Any]) -> str:
    """As install.manifest records each robot it registered (its CODE, HANDLER and the rest)."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def check_robots(probe: PortalProbe, public_url: str, field_items: dict[str, Any]) -> Check:
    """bizproc.robot.list names the robots but not their handler: their handler is known from the
    registrations the manifest recorded, which must be those of this public URL."""
    from install.manifest_data import robot_definitions

    definitions = robot_definitions(public_url) or []
    fix = "reinstall the app (or publish an update) so its installer registers the robots at NEZABYT_PUBLIC_URL"
    if probe.robots is None:
        return Check("robots", False, "bizproc.robot.list refused (no bizproc scope?)", fix)
    wanted = {str(p["CODE"]): robot_fingerprint(p) for p in definitions}
    missing = sorted(set(wanted) - set(probe.robots))
    recorded = dict((field_items or {}).get("robots") or {})
    other_url = sorted(code for code, fingerprint in wanted.items()
                       if code in probe.robots and recorded.get(code) != fingerprint)
    if missing or other_url:
        found = [f"{len(missing)} of {len(wanted)} not registered" if missing else "",
                 f"{len(other_url)} registered for another address or version" if other_url else ""]
        return Check("robots", False, "; ".join(f for f in found if f), fix)
    return Check("robots", True, f"{len(wanted)} registered at {public_url}/robots/…")


def check_status_fields(probe: PortalProbe, options, field_items: dict[str, Any]) -> Check:
    problems = []
    for entity, field in (probe.fields or {}).items():
        if field is None:
            problems.append(f"{entity}: no status field")
            continue
        on_portal = {str(item.get("ID")) for item in field.get("LIST") or []}
        stored = dict((field_items or {}).get(entity) or {})
        unmapped = [code for code in options.codes if code not in stored]
        gone = [code for code, item_id in stored.items() if code in options.codes and str(item_id) not in on_portal]
        if unmapped or gone:
            problems.append(f"{entity}: item map incomplete ({', '.join(unmapped + gone)})")
    if problems:
        return Check("status fields", False, "; ".join(problems),
                     "save the statuses once in the app's settings (re-syncs the fields), or reinstall the app")
    return Check("status fields", True, f"{', '.join(probe.fields or {})}: {len(options.codes)} statuses mapped")


def check_time_zone(settings_data: dict[str, Any], portal_zone: str | None) -> tuple[Check, Any]:
    """(the check, the parsed Options or None): an unusable option set is reported here."""
    from addon.options import Options, OptionsError

    data = dict(settings_data or {})
    if not data.get("time_zone") and portal_zone:
        data["time_zone"] = portal_zone
    try:
        options = Options.from_dict(data)
    except OptionsError as exc:
        errors = getattr(exc, "errors", {}) or {"settings": str(exc)}
        name = "time zone" if "time_zone" in errors else "settings"
        return Check(name, False, "; ".join(f"{k}: {v}" for k, v in errors.items()),
                     "correct it on the app's settings page (a name like Europe/Moscow or an offset like +03:00)"), None
    return Check("time zone", True, f"{options.time_zone}, digest at {options.notify_time}"), options


def check_recent_events(session, portal_id: int, now: dt.datetime) -> Check:
    since = naive_utc(now) - EVENTS_WITHIN
    count = session.scalar(select(func.count()).select_from(StoredEvent).where(
        StoredEvent.portal_id == portal_id, StoredEvent.source == "online", StoredEvent.received_at >= since)) or 0
    if not count:
        return Check("events in the last day", False, "none received",
                     "the portal must reach NEZABYT_PUBLIC_URL/events: check the proxy's log and the event handlers")
    return Check("events in the last day", True, f"{count} received")


def check_last_daily_run(session, portal: Portal, tz, now: dt.datetime) -> Check:
    name = "last daily run"
    job = session.scalar(select(JobRun).where(JobRun.portal_id == portal.id, JobRun.kind == "daily")
                         .order_by(JobRun.id.desc()).limit(1))
    today = _utc(now).astimezone(tz).date()
    if job is None:
        if portal.installed_at is not None and naive_utc(now) - portal.installed_at < dt.timedelta(days=1):
            return Check(name, True, "none yet (installed less than a day ago)")
        return Check(name, False, "never ran",
                     "the worker runs it at the portal's notification time: is `nezabyt worker` running?")
    day = dt.date.fromisoformat((job.params or {}).get("day") or today.isoformat())
    if job.status == "failed":
        return Check(name, False, f"{day} failed: {(job.error or '')[:120]}",
                     "see the worker's log; `nezabyt decay --portal P` runs it again")
    if day < today - dt.timedelta(days=1):
        return Check(name, False, f"{day} ({job.status}), {(today - day).days} days ago",
                     "is `nezabyt worker` running? (missed days catch up by themselves once it runs)")
    return Check(name, True, f"{day}: {job.status}")


def check_health(session, portal: Portal, now: dt.datetime) -> Check:
    """Parked methods, a portal waiting for re-authorization, events or writes that keep failing."""
    problems = []
    if portal.status != PORTAL_ACTIVE:
        problems.append(f"portal {portal.status}: {portal.status_reason or ''}".strip())
    moment = _utc(now).timestamp()
    parked = sorted(m for m, until in (portal.parked_methods or {}).items() if float(until) > moment)
    if parked:
        problems.append(f"parked (operating time limit): {', '.join(parked)}")
    failing = session.scalar(select(func.count()).select_from(StoredEvent).where(
        StoredEvent.portal_id == portal.id, StoredEvent.processed_at.is_(None), StoredEvent.error.is_not(None))) or 0
    if failing:
        problems.append(f"{failing} events failing")
    since = naive_utc(now) - dt.timedelta(days=1)
    writes = session.scalar(select(func.count()).select_from(Outbox).where(
        Outbox.portal_id == portal.id, Outbox.status == "failed", Outbox.created_at >= since)) or 0
    messages = session.scalar(select(func.count()).select_from(NotificationLog).where(
        NotificationLog.portal_id == portal.id, NotificationLog.status == "failed",
        NotificationLog.created_at >= since)) or 0
    if writes or messages:
        problems.append(f"failed in the last day: {writes} writes, {messages} messages")
    if problems:
        return Check("parked or failing", False, "; ".join(problems),
                     "see the worker's log for the errors; a needs_reauth portal needs its admin to open the app")
    return Check("parked or failing", True, "nothing")


def portal_checks(services, portal_id: int, now: dt.datetime) -> list[Check]:
    from addon.options import parse_time_zone

    public_url = services.settings.public_url.rstrip("/")
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        row = session.get(PortalSettings, portal_id)
        data, field_items = (dict(row.data or {}), dict(row.field_items or {})) if row else ({}, {})
        zone_check, options = check_time_zone(data, portal.time_zone)
        tz = (parse_time_zone(options.time_zone) if options else None) or dt.timezone.utc
        stored = [check_recent_events(session, portal_id, now), check_last_daily_run(session, portal, tz, now),
                  check_health(session, portal, now)]
        domain = portal.domain
    checks: list[Check] = []
    probe = probe_portal(services, portal_id, options.entity_types if options else ("contact", "company"))
    checks.append(check_tokens(probe))
    if probe.error is None:
        checks += [check_scopes(probe), check_event_handlers(probe, public_url),
                   check_robots(probe, public_url, field_items)]
        if options is not None:
            checks.append(check_status_fields(probe, options, field_items))
    checks.append(zone_check)
    checks += stored
    return [Check(c.name, c.ok, c.found, c.fix, portal=domain) for c in checks]


def deployment_checks(services, now: dt.datetime, get: Callable[..., Any] = requests.get) -> list[Check]:
    settings = services.settings
    return [check_secret_key(settings), check_public_url_https(settings), check_public_url_answers(settings, get),
            check_database(services), check_worker(services, now)]


def portals_to_check(services, portal: str | None) -> list[int]:
    """The portal named by --portal (member_id or domain), else every installed one."""
    from addon.engine import find_portal

    with services.sessions() as session:
        if portal:
            row = find_portal(session, portal)
            if row is None:
                raise LookupError(f"no portal {portal!r} (give its member_id or domain)")
            return [row.id]
        return list(session.scalars(select(Portal.id).where(Portal.status != PORTAL_UNINSTALLED).order_by(Portal.id)))


def run_checks(services, now: dt.datetime | None = None, portal: str | None = None,
               get: Callable[..., Any] = requests.get) -> list[Check]:
    now = now or dt.datetime.now(dt.timezone.utc)
    checks = deployment_checks(services, now, get)
    if not next(c for c in checks if c.name == "database migrated").ok:
        return checks  # no database, no portals to look at
    for portal_id in portals_to_check(services, portal):
        try:
            checks += portal_checks(services, portal_id, now)
        except Exception as exc:  # noqa: BLE001 — one portal's trouble must not hide the others
            checks.append(Check("portal checks", False, f"portal {portal_id}: {type(exc).__name__}: {str(exc)[:160]}",
                                "see the error; `nezabyt doctor --portal P` checks this portal alone"))
    return checks


def render(checks: list[Check]) -> str:
    """The table: a heading per portal, a line per check, the fix under each ✗."""
    width = max((len(c.name) for c in checks), default=10) + 2
    lines: list[str] = ["deployment"]
    current: str | None = None
    for check in checks:
        if check.portal != current:
            current = check.portal
            lines.append(f"portal {current}")
        lines.append(f"  {'✓' if check.ok else '✗'}  {check.name:<{width}}{check.found}")
        if not check.ok and check.fix:
            lines.append(f"     {'':<{width}}fix: {check.fix}")
    problems = sum(not c.ok for c in checks)
    lines.append("all checks passed" if not problems else f"{problems} problem{'s' if problems > 1 else ''} found")
    return "\n".join(lines)

