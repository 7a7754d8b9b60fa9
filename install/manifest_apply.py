"""Applying the manifest on install and on every app update (an update drops the event handlers):
read what the portal has, write only what differs, store what was applied; a second run writes nothing."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any

from addon.db import unit_of_work
from addon.models import Portal, PortalSettings
from addon.options import Options
from addon.bitrix.client import PortalClient, portal_client
from addon.bitrix.errors import PortalError
from addon.bitrix.pace import store_plan
from install.manifest_data import (
    FIELD_LABELS, PLACEMENTS, desired_events, desired_placements, reason_items, robot_definitions, status_items,
)
from install.manifest_diff import (
    ManifestReport, event_commands, field_commands, field_items, field_reads, placement_commands, robot_commands,
)

log = logging.getLogger(__name__)

# What the portal has is read in one batch (handlers, placements, the four enumeration fields,
# robots, app.info and, when needed, server.time), every difference is written in one batch, and
# the fields are read once more only when they changed (for their list item IDs). A first install
# costs three calls; the same version applied again, one.


def manifest_fingerprint(services, portal_id: int) -> str:
    """What this deployment would register on the portal, as a short hash: with the portal's app
    VERSION it is the manifest key, and the same key means nothing needs applying."""
    public_url = services.settings.public_url.rstrip("/")
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        row = session.get(PortalSettings, portal_id)
        scope, installer = portal.scope or "", portal.installed_by_user_id
        options = Options.from_dict(row.data if row else None)
    declared = {"events": desired_events(public_url, scope), "placements": desired_placements(public_url),
                "titles": PLACEMENTS, "labels": FIELD_LABELS, "statuses": status_items(options),
                "reasons": reason_items(options), "robots": robot_definitions(public_url, installer)}
    return hashlib.sha1(json.dumps(declared, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def manifest_key(version: str | None, fingerprint: str) -> str:
    return f"{version or '-'}:{fingerprint}"


def ensure_manifest(services, portal_id: int, version: str | None = None,
                    client: PortalClient | None = None) -> ManifestReport:
    """Apply the manifest unless this app version already has it: with a known VERSION and the
    stored key, one event.get proves the handlers are still bound (an update drops them), and
    nothing else is read or written."""
    fingerprint = manifest_fingerprint(services, portal_id)
    with services.sessions() as session:
        stored = session.get(Portal, portal_id).manifest_key
    own = client is None
    client = client or portal_client(services, portal_id)
    try:
        if version and stored == manifest_key(version, fingerprint):
            public_url = services.settings.public_url.rstrip("/")
            with services.sessions() as session:
                scope = session.get(Portal, portal_id).scope or ""
            if not event_commands(client.call("event.get") or [], desired_events(public_url, scope),
                                  ManifestReport()):
                return ManifestReport()
        return apply_manifest(services, portal_id, client=client, version=version)
    finally:
        if own:
            client.close()


def apply_manifest(services, portal_id: int, client: PortalClient | None = None,
                   version: str | None = None) -> ManifestReport:
    report = ManifestReport()
    public_url = services.settings.public_url.rstrip("/")
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        scope, language = portal.scope or "", portal.language or "ru"
        needs_clock = portal.entity_watermark is None
    own = client is None
    client = client or portal_client(services, portal_id)
    try:
        reads = {"events": ("event.get", {}), "placements": ("placement.get", {}), "robots": ("bizproc.robot.list", {}),
                 "app": ("app.info", {}), **field_reads()}
        if needs_clock:
            reads["clock"] = ("server.time", {})
        state = _read(client, reads, optional=("robots", "app", "clock"))
        options, stored_items, applied_robots, installer = _portal_state(services, portal_id)
        commands: dict[str, tuple[str, dict]] = {}
        commands.update(event_commands(state["events"] or [], desired_events(public_url, scope), report))
        commands.update(placement_commands(state["placements"] or [], desired_placements(public_url), language,
                                           report))
        commands.update(field_commands(state, options, stored_items, report))
        robots = robot_definitions(public_url, installer)
        fingerprints = {}
        if robots is not None:
            if isinstance(state["robots"], PortalError):  # bizproc not granted: robots are unavailable
                report.errors.append(f"bizproc.robot.list: {state['robots'].code} {state['robots'].description}")
            else:
                fingerprints, robot_writes = robot_commands(state["robots"] or [], robots, applied_robots, report)
                commands.update(robot_writes)
        answer = client.batch(commands) if commands else None
        for key, error in (answer.errors if answer else {}).items():
            method, params = commands[key]
            if method == "event.bind" and "already binded" in (error.description or "").lower():
                continue
            if method.startswith("bizproc.robot."):
                fingerprints.pop(str(params.get("CODE")), None)  # not applied: try again next time
            if method.startswith("crm.") and key.startswith("f"):
                raise PortalError(error.code, f"{method}: {error.description}", error.http_status, method)
            report.errors.append(f"{method} {params.get('CODE') or params.get('event') or ''}: "
                                 f"{error.code} {error.description}".replace("  ", " "))
        if report.fields_created or report.fields_updated:
            changed = {key: read for key, read in field_reads().items()}
            state.update(_read(client, changed))
        items = field_items(state, options, stored_items)
        _store_applied(services, portal_id, items, fingerprints if robots is not None
                       and not isinstance(state["robots"], PortalError) else None)
        _store_portal_facts(services, portal_id, state.get("app"), state.get("clock"))
        info = state.get("app") if isinstance(state.get("app"), dict) else {}
        version = version or (str(info["VERSION"]) if info.get("VERSION") not in (None, "") else None)
        with unit_of_work(services.sessions) as session:
            portal = session.get(Portal, portal_id, with_for_update=True)
            if version:
                portal.app_version = version[:32]
            if not report.errors:
                portal.manifest_key = manifest_key(portal.app_version, manifest_fingerprint(services, portal_id))
    finally:
        if own:
            client.close()
    return report


def sync_status_fields(services, portal_id: int, client: PortalClient | None = None,
                       report: ManifestReport | None = None) -> ManifestReport:
    """Create or re-sync the status and reason enumeration fields on contacts and companies from
    the portal's Options, and store their list item IDs in PortalSettings.field_items."""
    report = report or ManifestReport()
    own = client is None
    client = client or portal_client(services, portal_id)
    try:
        state = _read(client, field_reads())
        options, stored_items, _, _ = _portal_state(services, portal_id)
        commands = field_commands(state, options, stored_items, report)
        if commands:
            answer = client.batch(commands)
            for key, error in answer.errors.items():
                method = commands[key][0]
                raise PortalError(error.code, f"{method}: {error.description}", error.http_status, method)
            state.update(_read(client, field_reads()))
        _store_applied(services, portal_id, field_items(state, options, stored_items), None)
    finally:
        if own:
            client.close()
    return report


def _read(client: PortalClient, reads: dict[str, tuple[str, dict]], optional: tuple[str, ...] = ()) -> dict:
    """Run reads in one batch: {key: result}; an optional read's error is kept as its result."""
    answer = client.batch(reads)
    out: dict[str, Any] = {}
    for key, (method, _) in reads.items():
        if key in answer.errors:
            if key not in optional:
                error = answer.errors[key]
                raise PortalError(error.code, error.description, error.http_status, method)
            out[key] = answer.errors[key]
        else:
            out[key] = answer.results.get(key)
    return out


def _portal_state(services, portal_id: int) -> tuple[Options, dict, dict, int | None]:
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        portal = session.get(Portal, portal_id)
        items = dict(row.field_items or {}) if row else {}
        return (Options.from_dict(row.data if row else None), items, dict(items.get("robots") or {}),
                portal.installed_by_user_id if portal is not None else None)


def _store_applied(services, portal_id: int, items: dict, robots: dict | None) -> None:
    with unit_of_work(services.sessions) as session:
        row = session.get(PortalSettings, portal_id, with_for_update=True)
        if row is None:
            return
        merged = {**(row.field_items or {}), **items}
        if robots is not None:
            merged["robots"] = robots
        if merged != (row.field_items or {}):
            row.field_items = merged


def _store_portal_facts(services, portal_id: int, app_info, clock) -> None:
    """The plan from app.info (the REST budget, addon.bitrix.pace); from server.time the reconcile
    watermarks of a new portal."""
    if isinstance(app_info, dict):
        store_plan(services, portal_id, app_info)
    elif isinstance(app_info, PortalError):
        log.warning("portal %s: could not read its plan: %s", portal_id, app_info)
    if not isinstance(clock, str):
        return
    try:
        moment = dt.datetime.fromisoformat(clock)
    except ValueError:
        return
    server_time = moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else None
    with unit_of_work(services.sessions) as session:
        portal = session.get(Portal, portal_id, with_for_update=True)
        if server_time is not None:
            # Reconcile starts from the install, by the portal's clock (its DATE_MODIFY's clock).
            portal.entity_watermark = portal.entity_watermark or server_time
            portal.activity_watermark = portal.activity_watermark or server_time
