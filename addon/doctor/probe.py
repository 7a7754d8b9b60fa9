"""The doctor's look at one portal over REST: the scopes it granted, its event handlers, robots and
status fields, read once into a PortalProbe and checked against what the install applies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from addon.bitrix.client import PortalClient  # the one place doctor speaks REST
from addon.bitrix.errors import PortalError
from addon.doctor.check import Check
from addon.engine import STATUS_FIELD
# What the install registers: the doctor checks the portal against it (ARCHITECTURE.md's one exception).
from install.manifest_data import desired_events, robot_definitions
from install.manifest_diff import robot_fingerprint

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


def check_robots(probe: PortalProbe, public_url: str, field_items: dict[str, Any]) -> Check:
    """bizproc.robot.list names the robots but not their handler: their handler is known from the
    registrations the manifest recorded, which must be those of this public URL."""
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

