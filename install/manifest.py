"""The registration manifest: everything Nezabyt registers on a portal (event handlers, the status
and reason enumeration fields, the detail-tab placements, robots), declared once and applied
idempotently on install and on every app update (Bitrix24 drops event handlers on update).

Each part reads what the portal has and only adds, updates or removes what differs, so applying
the manifest twice makes no second write.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from addon.db import unit_of_work
from addon.models import Portal, PortalSettings
from addon.options import Options
from addon.bitrix.client import PortalClient, PortalError, portal_client

log = logging.getLogger(__name__)

CRM_EVENTS = (
    "ONCRMCONTACTADD", "ONCRMCONTACTUPDATE", "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD", "ONCRMCOMPANYUPDATE", "ONCRMCOMPANYDELETE",
    "ONCRMDEALADD", "ONCRMDEALUPDATE",
    "ONCRMACTIVITYADD", "ONCRMACTIVITYUPDATE",
    "ONAPPUNINSTALL",
)
TELEPHONY_EVENTS = ("ONVOXIMPLANTCALLEND",)
# A UI install learns its application_token from ONAPPINSTALL, delivered once install finishes.
INSTALL_EVENT = "ONAPPINSTALL"

STATUS_FIELD = "UF_CRM_NEZABYT_STATUS"
REASON_FIELD = "UF_CRM_NEZABYT_REASON"
FIELD_ENTITIES = ("contact", "company")
PLACEMENTS = {
    "CRM_CONTACT_DETAIL_TAB": {"ru": "Не забыт", "en": "Nezabyt"},
    "CRM_COMPANY_DETAIL_TAB": {"ru": "Не забыт", "en": "Nezabyt"},
}
FIELD_LABELS = {
    STATUS_FIELD: {"ru": "Статус клиента (Не забыт)", "en": "Client status (Nezabyt)"},
    REASON_FIELD: {"ru": "Причина статуса (Не забыт)", "en": "Status reason (Nezabyt)"},
}


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
    granted = {s.strip().lower() for s in (scope or "").split(",") if s.strip()}
    events = {name: f"{public_url}/events" for name in CRM_EVENTS}
    if "telephony" in granted:
        events.update({name: f"{public_url}/events" for name in TELEPHONY_EVENTS})
    events[INSTALL_EVENT] = f"{public_url}/install"
    return events


def desired_placements(public_url: str) -> dict[str, str]:
    return {code: f"{public_url}/placement/{code.lower()}" for code in PLACEMENTS}


def status_items(options: Options) -> list[dict[str, Any]]:
    """The ladder as enumeration items: XML_ID = status code (codes stay, names may change)."""
    return [{"XML_ID": s.code, "VALUE": s.name, "SORT": (i + 1) * 10} for i, s in enumerate(options.statuses)]


def reason_code(reason: str) -> str:
    return "R_" + hashlib.sha1(reason.strip().lower().encode()).hexdigest()[:12].upper()


def reason_items(options: Options) -> list[dict[str, Any]]:
    """The union of every status's reasons, first occurrence first."""
    seen: dict[str, str] = {}
    for s in options.statuses:
        for reason in s.reasons:
            seen.setdefault(reason_code(reason), reason)
    return [{"XML_ID": code, "VALUE": text, "SORT": (i + 1) * 10} for i, (code, text) in enumerate(seen.items())]


def robot_definitions(public_url: str, auth_user_id: int | None = None) -> list[dict[str, Any]] | None:
    """The robots module's registrations; None while that module does not exist."""
    try:
        from addon.robots.catalog import robot_definitions as definitions
    except ModuleNotFoundError:
        return None
    return definitions(public_url, auth_user_id)


# --- applying ----------------------------------------------------------------------------------

def apply_manifest(services, portal_id: int, client: PortalClient | None = None) -> ManifestReport:
    report = ManifestReport()
    public_url = services.settings.public_url.rstrip("/")
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        scope = portal.scope or ""
        language = portal.language or "ru"
    own = client is None
    client = client or portal_client(services, portal_id)
    try:
        _apply_events(client, desired_events(public_url, scope), report)
        _apply_placements(client, desired_placements(public_url), language, report)
        sync_status_fields(services, portal_id, client=client, report=report)
        _apply_robots(services, client, portal_id, public_url, report)
        _read_plan(services, portal_id, client)
    finally:
        if own:
            client.close()
    return report


def _read_plan(services, portal_id: int, client: PortalClient) -> None:
    """The portal's plan sets its REST budget (addon.bitrix.pace); until it answers, the standard one."""
    from addon.bitrix.pace import read_plan

    try:
        read_plan(services, portal_id, client)
    except PortalError as exc:
        log.warning("portal %s: could not read its plan: %s", portal_id, exc)


def _apply_events(client: PortalClient, desired: dict[str, str], report: ManifestReport) -> None:
    bound = client.call("event.get") or []
    have: set[tuple[str, str]] = set()
    commands: dict[str, tuple[str, dict]] = {}
    for row in bound:
        if str(row.get("offline", 0)) in ("1", "True", "true"):
            continue
        key = (str(row.get("event", "")).upper(), str(row.get("handler", "")))
        if desired.get(key[0]) == key[1] and key not in have:
            have.add(key)
        else:  # a handler the manifest does not declare (old URL, dropped event): remove it
            commands[f"u{len(commands)}"] = ("event.unbind", {"event": key[0], "handler": key[1]})
            report.events_unbound.append(key[0])
    for name, handler in desired.items():
        if (name, handler) not in have:
            commands[f"b{len(commands)}"] = ("event.bind", {"event": name, "handler": handler})
            report.events_bound.append(name)
    _run(client, commands, report, tolerate=("Handler already binded",))


def _apply_placements(client: PortalClient, desired: dict[str, str], language: str,
                      report: ManifestReport) -> None:
    rows = client.call("placement.get") or []
    have: set[tuple[str, str]] = set()
    commands: dict[str, tuple[str, dict]] = {}
    for row in rows:
        row = {str(k).lower(): v for k, v in row.items()}
        key = (str(row.get("placement", "")).upper(), str(row.get("handler", "")))
        if desired.get(key[0]) == key[1] and key not in have:
            have.add(key)
        else:
            commands[f"u{len(commands)}"] = ("placement.unbind", {"PLACEMENT": key[0], "HANDLER": key[1]})
            report.placements_unbound.append(key[0])
    for code, handler in desired.items():
        if (code, handler) not in have:
            titles = PLACEMENTS[code]
            commands[f"b{len(commands)}"] = ("placement.bind", {
                "PLACEMENT": code, "HANDLER": handler, "TITLE": titles.get(language, titles["en"]),
                "LANG_ALL": {lang: {"TITLE": title} for lang, title in titles.items()}})
            report.placements_bound.append(code)
    _run(client, commands, report)


def _run(client: PortalClient, commands: dict[str, tuple[str, dict]], report: ManifestReport,
         tolerate: tuple[str, ...] = ()) -> None:
    if not commands:
        return
    answer = client.batch(commands)
    for key, error in answer.errors.items():
        if any(t.lower() in (error.description or "").lower() for t in tolerate):
            continue
        report.errors.append(f"{commands[key][0]} {commands[key][1]}: {error.code} {error.description}")


def sync_status_fields(services, portal_id: int, client: PortalClient | None = None,
                       report: ManifestReport | None = None) -> ManifestReport:
    """Create or re-sync the status and reason enumeration fields on contacts and companies from
    the portal's Options, and store their list item IDs in PortalSettings.field_items."""
    report = report or ManifestReport()
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        options = Options.from_dict(row.data if row else None)
    own = client is None
    client = client or portal_client(services, portal_id)
    items: dict[str, dict[str, str]] = {}
    try:
        for entity in FIELD_ENTITIES:
            items[entity] = _sync_field(client, entity, STATUS_FIELD, status_items(options), report)
            items[f"reason_{entity}"] = _sync_field(client, entity, REASON_FIELD, reason_items(options), report)
    finally:
        if own:
            client.close()
    with unit_of_work(services.sessions) as session:
        row = session.get(PortalSettings, portal_id, with_for_update=True)
        if row is None:
            row = PortalSettings(portal_id=portal_id, data=options.to_dict(), field_items={})
            session.add(row)
        merged = {**(row.field_items or {}), **items}
        if merged != (row.field_items or {}):
            row.field_items = merged
    return report


def _sync_field(client: PortalClient, entity: str, field_name: str, desired: list[dict[str, Any]],
                report: ManifestReport) -> dict[str, str]:
    """Make one enumeration field match `desired`; returns {XML_ID: item ID}."""
    method = f"crm.{entity}.userfield"
    existing = _find_field(client, method, field_name)
    label = FIELD_LABELS[field_name]
    if existing is None:
        client.call(f"{method}.add", {"fields": {
            "FIELD_NAME": field_name[len("UF_CRM_"):], "USER_TYPE_ID": "enumeration", "XML_ID": field_name,
            "MULTIPLE": "N", "MANDATORY": "N", "SHOW_FILTER": "E", "SHOW_IN_LIST": "Y",
            "EDIT_FORM_LABEL": label, "LIST_COLUMN_LABEL": label, "LIST_FILTER_LABEL": label,
            "LABEL": label["ru"], "SETTINGS": {"DISPLAY": "LIST"},
            "LIST": [{**item, "DEF": "N"} for item in desired]}})
        report.fields_created.append(f"{entity}:{field_name}")
        existing = _find_field(client, method, field_name)
        if existing is None:
            raise PortalError("FIELD_NOT_CREATED", f"{field_name} is missing after {method}.add", None, method)
    changes = list_changes(existing.get("LIST") or [], desired)
    if changes:
        client.call(f"{method}.update", {"id": existing["ID"], "fields": {"LIST": changes}})
        report.fields_updated.append(f"{entity}:{field_name}")
        existing = _find_field(client, method, field_name) or existing
    return {str(item.get("XML_ID")): str(item["ID"]) for item in existing.get("LIST") or [] if item.get("XML_ID")}


def _find_field(client: PortalClient, method: str, field_name: str) -> dict | None:
    rows = client.call(f"{method}.list", {"filter": {"FIELD_NAME": field_name}}) or []
    return next((r for r in rows if str(r.get("FIELD_NAME", "")).upper() == field_name), None)


def list_changes(current: list[dict[str, Any]], desired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The LIST edits that turn `current` items into `desired` ([] when they already agree).
    Items are matched by XML_ID; an item without one is adopted by equal VALUE."""
    by_code = {str(i.get("XML_ID")): i for i in current if i.get("XML_ID")}
    unclaimed = [i for i in current if not i.get("XML_ID")]
    changes: list[dict[str, Any]] = []
    kept: set[str] = set()
    for want in desired:
        have = by_code.get(want["XML_ID"])
        if have is None:
            have = next((i for i in unclaimed if str(i.get("VALUE")) == want["VALUE"]), None)
            if have is not None:
                unclaimed.remove(have)
        if have is None:
            changes.append({"VALUE": want["VALUE"], "SORT": want["SORT"], "XML_ID": want["XML_ID"], "DEF": "N"})
            continue
        kept.add(str(have["ID"]))
        if (str(have.get("VALUE")) != want["VALUE"] or str(have.get("XML_ID") or "") != want["XML_ID"]
                or _int(have.get("SORT")) != want["SORT"]):
            changes.append({"ID": have["ID"], "VALUE": want["VALUE"], "SORT": want["SORT"], "XML_ID": want["XML_ID"]})
    for item in current:
        if str(item["ID"]) not in kept:
            changes.append({"ID": item["ID"], "DEL": "Y"})
    return changes


def _apply_robots(services, client: PortalClient, portal_id: int, public_url: str, report: ManifestReport) -> None:
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        installer = portal.installed_by_user_id if portal is not None else None
    definitions = robot_definitions(public_url, installer)
    if definitions is None:
        return
    try:
        registered = {str(code) for code in (client.call("bizproc.robot.list") or [])}
    except PortalError as exc:  # bizproc scope not granted: robots are simply unavailable
        report.errors.append(f"bizproc.robot.list: {exc.code} {exc.description}")
        return
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        applied = dict((row.field_items or {}).get("robots") or {}) if row else {}
    commands: dict[str, tuple[str, dict]] = {}
    fingerprints: dict[str, str] = {}
    for params in definitions:
        code = str(params["CODE"])
        fingerprint = hashlib.sha1(json.dumps(params, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        fingerprints[code] = fingerprint
        if code not in registered:
            commands[f"a{len(commands)}"] = ("bizproc.robot.add", params)
            report.robots_added.append(code)
        elif applied.get(code) != fingerprint:
            fields = {k: v for k, v in params.items() if k != "CODE"}
            commands[f"u{len(commands)}"] = ("bizproc.robot.update", {"CODE": code, "FIELDS": fields})
            report.robots_updated.append(code)
    for code in sorted(registered - set(fingerprints)):
        commands[f"d{len(commands)}"] = ("bizproc.robot.delete", {"CODE": code})
        report.robots_deleted.append(code)
    before = len(report.errors)
    if commands:
        answer = client.batch(commands)
        for key, error in answer.errors.items():
            code = str(commands[key][1].get("CODE"))
            fingerprints.pop(code, None)  # not applied: try again next time
            report.errors.append(f"{commands[key][0]} {code}: {error.code} {error.description}")
    if applied != fingerprints or len(report.errors) != before:
        with unit_of_work(services.sessions) as session:
            row = session.get(PortalSettings, portal_id, with_for_update=True)
            if row is not None:
                row.field_items = {**(row.field_items or {}), "robots": fingerprints}


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
