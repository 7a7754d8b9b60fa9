"""Running the doctor: every deployment check, then each portal's (`run_checks`), and the table the
command line prints (`render`)."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from sqlalchemy import select

from addon.doctor.check import Check
from addon.doctor.deployment import deployment_checks
from addon.doctor.probe import (
    check_event_handlers,
    check_robots,
    check_scopes,
    check_status_fields,
    check_tokens,
    probe_portal,
)
from addon.doctor.stored import check_health, check_last_daily_run, check_recent_events, check_time_zone
from addon.engine import find_portal
from addon.models import PORTAL_UNINSTALLED, Portal, PortalSettings
from addon.options import parse_time_zone


def portal_checks(services, portal_id: int, now: dt.datetime) -> list[Check]:
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


def portals_to_check(services, portal: str | None) -> list[int]:
    """The portal named by --portal (member_id or domain), else every installed one."""
    with services.sessions() as session:
        if portal:
            row = find_portal(session, portal)
            if row is None:
                raise LookupError(f"no portal {portal!r} (give its member_id or domain)")
            return [row.id]
        return list(session.scalars(select(Portal.id).where(Portal.status != PORTAL_UNINSTALLED).order_by(Portal.id)))


def run_checks(services, now: dt.datetime | None = None, portal: str | None = None,
               get: Callable[..., Any] | None = None) -> list[Check]:
    """`get` stands in for requests.get in the look at our own public URL (tests); by default the real one."""
    now = now or dt.datetime.now(dt.timezone.utc)
    checks = deployment_checks(services, now) if get is None else deployment_checks(services, now, get)
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

