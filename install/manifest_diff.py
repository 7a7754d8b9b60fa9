"""The manifest compared with what the portal has: the REST commands that add, update or remove
what differs, the enumeration items matched to ours, and the report of what changed."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from addon.engine import REASON_FIELD, STATUS_FIELD
from addon.options import Options
from addon.bitrix.errors import PortalError
from install.manifest_data import FIELD_ENTITIES, FIELD_LABELS, PLACEMENTS, reason_items, status_items


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


def field_reads() -> dict[str, tuple[str, dict]]:
    return {f"field:{entity}:{name}": (f"crm.{entity}.userfield.list", {"filter": {"FIELD_NAME": name}})
            for entity in FIELD_ENTITIES for name in (STATUS_FIELD, REASON_FIELD)}


def event_commands(bound: list, desired: dict[str, str], report: ManifestReport) -> dict[str, tuple[str, dict]]:
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


def placement_commands(rows: list, desired: dict[str, str], language: str,
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


def field_commands(state: dict, options: Options, stored_items: dict,
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


def field_items(state: dict, options: Options, stored_items: dict) -> dict[str, dict[str, str]]:
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


def robot_fingerprint(params: dict[str, Any]) -> str:
    """What the installer records for each robot it registered (its CODE, HANDLER and the rest),
    and what the doctor compares the registrations with."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def robot_commands(registered_codes, definitions: list[dict[str, Any]], applied: dict,
                   report: ManifestReport) -> tuple[dict[str, str], dict[str, tuple[str, dict]]]:
    registered = {str(code) for code in registered_codes}
    commands: dict[str, tuple[str, dict]] = {}
    fingerprints: dict[str, str] = {}
    for params in definitions:
        code = str(params["CODE"])
        fingerprint = robot_fingerprint(params)
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
