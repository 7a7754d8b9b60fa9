"""The registration manifest's declaration: what Nezabyt registers on a portal (event handlers,
the status and reason enumeration fields and their list items, the detail-tab placements, robots)."""
from __future__ import annotations

from typing import Any

from addon.engine import REASON_FIELD, STATUS_FIELD  # the fields' names live once, in the engine
from addon.options import Options
from addon.bitrix.scope import parse_scope
from addon.robots.registry import robot_definitions as registered_robots
from addon.rules.ladder import reason_code

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
