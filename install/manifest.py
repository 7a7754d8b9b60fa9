"""The registration manifest: everything Nezabyt registers on a portal (event handlers, the status
and reason enumeration fields, the detail-tab placements, robots), declared once and applied
idempotently on install and on every app update (Bitrix24 drops event handlers on update).

Each part reads what the portal has and only adds, updates or removes what differs, so applying
the manifest twice makes no second write.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from addon.db import unit_of_work
from addon.engine import REASON_FIELD, STATUS_FIELD  # the fields' names live once, in the engine
from addon.models import Portal, PortalSettings
from addon.options import Options
from addon.bitrix.client import PortalClient, portal_client
from addon.bitrix.errors import PortalError
from addon.bitrix.scope import parse_scope
from addon.robots.registry import robot_definitions as registered_robots
from addon.rules.ladder import reason_code

log = logging.getLogger(__name__)

CRM_EVENTS = (
    "ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD", "ONCRMCOMPANYUPDATE", "ONCRMCOMPANYDELETE",
    "ONCRMDEALADD", "ONCRMDEALUPDATE",
    "ONCRMACTIVITYADD", "ONCRMACTIVITYUPDATE",
    "ONAPPUNINSTALL",
)
TELEPHONY_EVENTS = ("ONVOXIMPLANTCALLEND",)
# A UI install learns its application_token from ONAPPINSTALL, delivered once install finishes;
# an update brings a new one in ONAPPUPDATE (api-reference/common/events/on-app-update.md).
INSTALL_EVENT = "ONAPPINSTALL"
UPDATE_EVENT = "ONAPPUPDATE"

FIELD_ENTITIES = ("contact", "company")
PLACEMENTS = {
    "CRM_CONTACT_DETAIL_TAB": {"ru": "Не забыт", "en": "Nezabyt"},
    "CRM_COMPANY_DETAIL_TAB": {"ru": "Не забыт", "en": "Nezabyt"},
}
FIELD_LABELS = {
    STATUS_FIELD: {"ru": "Статус клиента (Не забыт)", "en": "Client status (Nezabyt)"},
    REASON_FIELD: {"ru": "Причина статуса (Не забыт)", "en": "Status reason (Nezabyt)"},
}


class ManifestIncomplete(Exception):
    """The portal's answer leaves the manifest unusable (a field missing after its add, a status
    with no list item): the install must fail rather than write statuses as nothing."""


@dataclass
class ManifestReport:
    events_bound: list[str] = field(default_factory=list)
    events_unbound: list[str] = field(default_factory=list)
    fields_created: list[str] = field(default_factory=list)
    fields_updated: list[str] = field(default_factory=list)
    placements_bound: list[str] = field(default_factory=list)
    placements_unbound: list[str] = field(default_factory=list)
    robots_added: list[str] = field(default_factory=list)
    robots_updated: list[str] = field(default_factory=list)
    robots_deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.events_bound, self.events_unbound, self.fields_created, self.fields_updated,
                    self.placements_bound, self.placements_unbound, self.robots_added,
                    self.robots_updated, self.robots_deleted))


# --- the declaration ---------------------------------------------------------------------------

def desired_events(public_url: str, scope: str) -> dict[str, str]:
    """{EVENT: handler URL}: what event.get must show."""
    granted = set(parse_scope(scope))
    events = {name: f"{public_url}/events" for name in CRM_EVENTS}
    if "telephony" in granted:
        events.update({name: f"{public_url}/events" for name in TELEPHONY_EVENTS})
    events[INSTALL_EVENT] = f"{public_url}/install"
    events[UPDATE_EVENT] = f"{public_url}/install"
    return events


def desired_placements(public_url: str) -> dict[str, str]:
    return {code: f"{public_url}/placement/{code.lower()}" for code in PLACEMENTS}


def status_items(options: Options) -> list[dict[str, Any]]:
    """The ladder as enumeration items: XML_ID = status code (codes stay, names may change)."""
    return [{"XML_ID": s.code, "VALUE": s.name, "SORT": (i + 1) * 10} for i, s in enumerate(options.statuses)]


def reason_items(options: Options) -> list[dict[str, Any]]:
    """The union of every status's reasons, first occurrence first."""
    seen: dict[str, str] = {}
    for s in options.statuses:
        for reason in s.reasons:
            seen.setdefault(reason_code(reason), reason)
    return [{"XML_ID": code, "VALUE": text, "SORT": (i + 1) * 10} for i, (code, text) in enumerate(seen.items())]


def robot_definitions(public_url: str, auth_user_id: int | None = None) -> list[dict[str, Any]]:
    """The robots' registrations (bizproc.robot.add fields), acting as the installing admin."""
    return registered_robots(public_url, auth_user_id)


# --- applying ----------------------------------------------------------------------------------
#
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
            if not _event_commands(client.call("event.get") or [], desired_events(public_url, scope),
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
                 "app": ("app.info", {}), **_field_reads()}
        if needs_clock:
            reads["clock"] = ("server.time", {})
        state = _read(client, reads, optional=("robots", "app", "clock"))
        options, stored_items, applied_robots, installer = _portal_state(services, portal_id)
        commands: dict[str, tuple[str, dict]] = {}
        commands.update(_event_commands(state["events"] or [], desired_events(public_url, scope), report))
        commands.update(_placement_commands(state["placements"] or [], desired_placements(public_url), language,
                                            report))
        commands.update(_field_commands(state, options, stored_items, report))
        robots = robot_definitions(public_url, installer)
        fingerprints = {}
        if robots is not None:
            if isinstance(state["robots"], PortalError):  # bizproc not granted: robots are unavailable
                report.errors.append(f"bizproc.robot.list: {state['robots'].code} {state['robots'].description}")
            else:
                fingerprints, robot_commands = _robot_commands(state["robots"] or [], robots, applied_robots, report)
                commands.update(robot_commands)
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
            changed = {key: read for key, read in _field_reads().items()}
            state.update(_read(client, changed))
        items = _field_items(state, options, stored_items)
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
        state = _read(client, _field_reads())
        options, stored_items, _, _ = _portal_state(services, portal_id)
        commands = _field_commands(state, options, stored_items, report)
        if commands:
            answer = client.batch(commands)
            for key, error in answer.errors.items():
                method = commands[key][0]
                raise PortalError(error.code, f"{method}: {error.description}", error.http_status, method)
            state.update(_read(client, _field_reads()))
        _store_applied(services, portal_id, _field_items(state, options, stored_items), None)
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


def _field_reads() -> dict[str, tuple[str, dict]]:
    return {f"field:{entity}:{name}": (f"crm.{entity}.userfield.list", {"filter": {"FIELD_NAME": name}})
            for entity in FIELD_ENTITIES for name in (STATUS_FIELD, REASON_FIELD)}


def _portal_state(services, portal_id: int) -> tuple[Options, dict, dict, int | None]:
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        portal = session.get(Portal, portal_id)
        items = dict(row.field_items or {}) if row else {}
        return (Options.from_dict(row.data if row else None), items, dict(items.get("robots") or {}),
                portal.installed_by_user_id if portal is not None else None)


def _event_commands(bound: list, desired: dict[str, str], report: ManifestReport) -> dict[str, tuple[str, dict]]:
    have: set[tuple[str, str]] = set()
    commands: dict[str, tuple[str, dict]] = {}
    for row in bound:
        if str(row.get("offline", 0)) in ("1", "True", "true"):
            continue
        key = (str(row.get("event", "")).upper(), str(row.get("handler", "")))
        if desired.get(key[0]) == key[1] and key not in have:
            have.add(key)
        else:  # a handler the manifest does not declare (old URL, dropped event): remove it
            commands[f"eu{len(commands)}"] = ("event.unbind", {"event": key[0], "handler": key[1]})
            report.events_unbound.append(key[0])
    for name, handler in desired.items():
        if (name, handler) not in have:
            commands[f"eb{len(commands)}"] = ("event.bind", {"event": name, "handler": handler})
            report.events_bound.append(name)
    return commands


def _placement_commands(rows: list, desired: dict[str, str], language: str,
                        report: ManifestReport) -> dict[str, tuple[str, dict]]:
    have: set[tuple[str, str]] = set()
    commands: dict[str, tuple[str, dict]] = {}
    for row in rows:
        row = {str(k).lower(): v for k, v in row.items()}
        key = (str(row.get("placement", "")).upper(), str(row.get("handler", "")))
        if desired.get(key[0]) == key[1] and key not in have:
            have.add(key)
        else:
            commands[f"pu{len(commands)}"] = ("placement.unbind", {"PLACEMENT": key[0], "HANDLER": key[1]})
            report.placements_unbound.append(key[0])
    for code, handler in desired.items():
        if (code, handler) not in have:
            titles = PLACEMENTS[code]
            commands[f"pb{len(commands)}"] = ("placement.bind", {
                "PLACEMENT": code, "HANDLER": handler, "TITLE": titles.get(language, titles["en"]),
                "LANG_ALL": {lang: {"TITLE": title} for lang, title in titles.items()}})
            report.placements_bound.append(code)
    return commands


def _desired_lists(options: Options) -> dict[str, list[dict[str, Any]]]:
    return {STATUS_FIELD: status_items(options), REASON_FIELD: reason_items(options)}


def _items_key(entity: str, field_name: str) -> str:
    return entity if field_name == STATUS_FIELD else f"reason_{entity}"


def _found(rows, field_name: str) -> dict | None:
    if isinstance(rows, PortalError):
        raise rows
    return next((r for r in rows or [] if str(r.get("FIELD_NAME", "")).upper() == field_name), None)


def _field_commands(state: dict, options: Options, stored_items: dict,
                    report: ManifestReport) -> dict[str, tuple[str, dict]]:
    commands: dict[str, tuple[str, dict]] = {}
    for entity in FIELD_ENTITIES:
        for field_name, desired in _desired_lists(options).items():
            method = f"crm.{entity}.userfield"
            existing = _found(state[f"field:{entity}:{field_name}"], field_name)
            if existing is None:
                label = FIELD_LABELS[field_name]
                commands[f"f{len(commands)}"] = (f"{method}.add", {"fields": {
                    "FIELD_NAME": field_name[len("UF_CRM_"):], "USER_TYPE_ID": "enumeration", "XML_ID": field_name,
                    "MULTIPLE": "N", "MANDATORY": "N", "SHOW_FILTER": "Y", "SHOW_IN_LIST": "Y",
                    "EDIT_FORM_LABEL": label, "LIST_COLUMN_LABEL": label, "LIST_FILTER_LABEL": label,
                    "LABEL": label["ru"], "SETTINGS": {"DISPLAY": "LIST"},
                    "LIST": [{**item, "DEF": "N"} for item in desired]}})
                report.fields_created.append(f"{entity}:{field_name}")
                continue
            changes = list_changes(existing.get("LIST") or [], desired,
                                   stored_items.get(_items_key(entity, field_name)) or {})
            if changes:
                commands[f"f{len(commands)}"] = (f"{method}.update", {"id": existing["ID"], "fields": {"LIST": changes}})
                report.fields_updated.append(f"{entity}:{field_name}")
    return commands


def _field_items(state: dict, options: Options, stored_items: dict) -> dict[str, dict[str, str]]:
    """{entity or reason_entity: {our code: the portal's item ID}}, complete or an error: a status
    the portal's list does not carry would be written as nothing."""
    items: dict[str, dict[str, str]] = {}
    for entity in FIELD_ENTITIES:
        for field_name, desired in _desired_lists(options).items():
            key = _items_key(entity, field_name)
            existing = _found(state[f"field:{entity}:{field_name}"], field_name)
            if existing is None:
                raise ManifestIncomplete(f"{field_name} is missing on {entity}s after it was added")
            matched = match_items(existing.get("LIST") or [], desired, stored_items.get(key) or {})
            missing = [want["XML_ID"] for want in desired if want["XML_ID"] not in matched]
            if missing:
                raise ManifestIncomplete(f"the {entity} field {field_name} has no list item for {', '.join(missing)}")
            items[key] = {code: str(item["ID"]) for code, item in matched.items()}
    return items


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
    from addon.bitrix.pace import store_plan

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


def utc_offset_name(moment) -> str | None:
    """`server.time` answers an ISO time with the portal's offset; keep the offset ("+03:00")."""
    if isinstance(moment, str):
        try:
            moment = dt.datetime.fromisoformat(moment)
        except ValueError:
            return None
    if not isinstance(moment, dt.datetime):
        return None
    offset = moment.utcoffset()
    if offset is None:
        return None
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def match_items(current: list[dict[str, Any]], desired: list[dict[str, Any]],
                stored: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """{our code: the portal's item} for the items of an enumeration field. The docs do not promise
    that a given XML_ID is kept, so an item is ours by its XML_ID, else by the item ID we stored
    for the code, else by its VALUE (the status's name)."""
    stored = stored or {}
    by_xml = {str(i.get("XML_ID")): i for i in current if i.get("XML_ID")}
    by_id = {str(i.get("ID")): i for i in current}
    taken: set[str] = set()
    matched: dict[str, dict[str, Any]] = {}
    for want in desired:
        item = by_xml.get(want["XML_ID"])
        if item is None or str(item["ID"]) in taken:
            item = by_id.get(str(stored.get(want["XML_ID"]) or ""))
        if item is None or str(item["ID"]) in taken:
            item = next((i for i in current if str(i.get("VALUE")) == want["VALUE"] and str(i["ID"]) not in taken
                         and str(i.get("XML_ID") or "") not in {w["XML_ID"] for w in desired if w is not want}),
                        None)
        if item is not None and str(item["ID"]) not in taken:
            taken.add(str(item["ID"]))
            matched[want["XML_ID"]] = item
    return matched


def list_changes(current: list[dict[str, Any]], desired: list[dict[str, Any]],
                 stored: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The LIST edits that turn `current` items into `desired` ([] when they already agree). An
    item's XML_ID is set when it has none; one the portal chose itself is left as it is."""
    matched = match_items(current, desired, stored)
    changes: list[dict[str, Any]] = []
    for want in desired:
        have = matched.get(want["XML_ID"])
        if have is None:
            changes.append({"VALUE": want["VALUE"], "SORT": want["SORT"], "XML_ID": want["XML_ID"], "DEF": "N"})
        elif (str(have.get("VALUE")) != want["VALUE"] or _int(have.get("SORT")) != want["SORT"]
              or not have.get("XML_ID")):
            changes.append({"ID": have["ID"], "VALUE": want["VALUE"], "SORT": want["SORT"], "XML_ID": want["XML_ID"]})
    kept = {str(item["ID"]) for item in matched.values()}
    for item in current:
        if str(item["ID"]) not in kept:
            changes.append({"ID": item["ID"], "DEL": "Y"})
    return changes


def _robot_commands(registered_codes, definitions: list[dict[str, Any]], applied: dict,
                    report: ManifestReport) -> tuple[dict[str, str], dict[str, tuple[str, dict]]]:
    registered = {str(code) for code in registered_codes}
    commands: dict[str, tuple[str, dict]] = {}
    fingerprints: dict[str, str] = {}
    for params in definitions:
        code = str(params["CODE"])
        fingerprint = hashlib.sha1(json.dumps(params, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        fingerprints[code] = fingerprint
        if code not in registered:
            commands[f"ra{len(commands)}"] = ("bizproc.robot.add", params)
            report.robots_added.append(code)
        elif applied.get(code) != fingerprint:
            fields = {k: v for k, v in params.items() if k != "CODE"}
            commands[f"ru{len(commands)}"] = ("bizproc.robot.update", {"CODE": code, "FIELDS": fields})
            report.robots_updated.append(code)
    for code in sorted(registered - set(fingerprints)):
        commands[f"rd{len(commands)}"] = ("bizproc.robot.delete", {"CODE": code})
        report.robots_deleted.append(code)
    return fingerprints, commands


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
