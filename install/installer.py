"""Installation: the installer page a portal opens (POST /install) and ONAPPINSTALL.

The claimed portal is asked (with the token it sent) whether the token is real before anything is
stored; a known member_id arriving from another domain is refused. Then the portal and its
default settings are stored and the registration manifest applied.
"""
from __future__ import annotations

import datetime as dt
import html
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select

from addon.db import unit_of_work
from addon.models import PORTAL_UNINSTALLED, Portal, PortalSettings
from addon.options import Options
from addon.bitrix.client import PortalError, unix_to_utc, user_client
from install.tokens import mark_active, save_application_token, save_tokens


class InstallError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class InstallOutcome:
    portal_id: int
    created: bool
    html: str
    manifest: object | None = None


@dataclass
class Claim:
    """What an install claims: whose portal, where, with which tokens."""

    member_id: str
    domain: str
    client_endpoint: str
    server_endpoint: str
    access_token: str
    refresh_token: str | None
    expires_in: int
    application_token: str | None
    scope: str
    language: str


def _need(source: dict, key: str) -> str:
    value = source.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InstallError(400, f"missing {key}")
    return value.strip()


def _valid_domain(domain: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?", domain):
        raise InstallError(400, "bad DOMAIN")
    return domain.lower()


def install_from_page(services, query: dict, form: dict) -> InstallOutcome:
    """POST /install from the portal's installer page (a UI app)."""
    domain = _valid_domain(str(query.get("DOMAIN") or form.get("DOMAIN") or ""))
    protocol = str(query.get("PROTOCOL") or form.get("PROTOCOL") or "1")
    claim = Claim(
        member_id=_need(form, "member_id").lower(),
        domain=domain,
        client_endpoint=f"{'https' if protocol == '1' else 'http'}://{domain}/rest/",
        server_endpoint=_need(form, "SERVER_ENDPOINT"),
        access_token=_need(form, "AUTH_ID"),
        refresh_token=_need(form, "REFRESH_ID"),
        expires_in=_int(form.get("AUTH_EXPIRES"), 3600),
        application_token=(form.get("APPLICATION_TOKEN") or None),
        scope=str(form.get("APPLICATION_SCOPE") or ""),
        language=str(query.get("LANG") or form.get("LANG") or "ru")[:8],
    )
    outcome = _install(services, claim)
    outcome.html = installer_page(domain, services.settings.public_url, outcome)
    return outcome


def handle_app_install(services, form: dict) -> int:
    """ONAPPINSTALL (an API-only install, or the event a UI install bound): store the tokens."""
    auth = form.get("auth")
    if not isinstance(auth, dict):
        raise InstallError(400, "missing auth[...]")
    client_endpoint = _need(auth, "client_endpoint")
    parts = urlsplit(client_endpoint)
    domain = _valid_domain(str(auth.get("domain") or parts.netloc))
    if parts.netloc.lower() != domain or parts.scheme not in ("http", "https"):
        raise InstallError(400, "auth[client_endpoint] is not on auth[domain]")
    claim = Claim(
        member_id=_need(auth, "member_id").lower(),
        domain=domain,
        client_endpoint=f"{parts.scheme}://{domain}/rest/",
        server_endpoint=_need(auth, "server_endpoint"),
        access_token=_need(auth, "access_token"),
        refresh_token=(auth.get("refresh_token") or None),
        expires_in=_int(auth.get("expires_in"), 3600),
        application_token=_need(auth, "application_token"),
        scope=str(auth.get("scope") or ""),
        language=str((form.get("data") or {}).get("LANGUAGE_ID") or "ru")[:8] if isinstance(form.get("data"), dict) else "ru",
    )
    return _install(services, claim).portal_id


def _install(services, claim: Claim) -> InstallOutcome:
    with services.sessions() as session:
        known = session.scalar(select(Portal).where(Portal.member_id == claim.member_id))
        if known is not None and known.domain.lower() != claim.domain:
            raise InstallError(403, "this portal is registered from another domain")
    proof = _prove(claim)
    created = False
    with unit_of_work(services.sessions) as session:
        portal = session.scalar(select(Portal).where(Portal.member_id == claim.member_id).with_for_update())
        if portal is None:
            created = True
            portal = Portal(member_id=claim.member_id, domain=claim.domain, client_endpoint=claim.client_endpoint,
                            server_endpoint=claim.server_endpoint, parked_methods={})
            session.add(portal)
        portal.client_endpoint = claim.client_endpoint
        portal.server_endpoint = claim.server_endpoint
        save_tokens(session, portal, claim.access_token, claim.refresh_token,
                    unix_to_utc(time.time() + claim.expires_in))
        if claim.application_token:
            save_application_token(session, portal, claim.application_token)
        elif portal.status == PORTAL_UNINSTALLED:
            # A new installation gets a new application_token; it comes with its first event.
            portal.application_token_enc = None
        portal.scope = claim.scope or proof["scope"] or portal.scope or ""
        portal.language = claim.language or portal.language
        if proof["user_id"]:
            portal.installed_by_user_id = proof["user_id"]
        if proof["time_zone"]:
            portal.time_zone = proof["time_zone"]
        if proof["server_time"] is not None:
            # Reconcile starts from the install, by the portal's clock (its DATE_MODIFY's clock).
            portal.entity_watermark = portal.entity_watermark or proof["server_time"]
            portal.activity_watermark = portal.activity_watermark or proof["server_time"]
        if created or portal.uninstalled_at is not None:
            portal.installed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        portal.uninstalled_at = None
        mark_active(portal)
        session.flush()
        if session.get(PortalSettings, portal.id) is None:
            language = claim.language if claim.language in ("ru", "en") else "ru"
            options = Options(time_zone=portal.time_zone or "UTC", language=language)
            # A new portal has no rows yet: nothing is dated under older options.
            session.add(PortalSettings(portal_id=portal.id, version=1, dated_version=1, data=options.to_dict(),
                                       field_items={}))
        portal_id = portal.id
    from install.manifest import apply_manifest

    report = apply_manifest(services, portal_id)
    return InstallOutcome(portal_id, created, "", report)


def _prove(claim: Claim) -> dict:
    """Ask the claimed portal with the claimed token: app.info must answer, the user must be an
    admin. Also reads the granted scope and the portal's UTC offset for the default time zone."""
    client = user_client(claim.client_endpoint, claim.access_token)
    try:
        app_info = client.call("app.info") or {}
        profile = client.call("profile") or {}
    except PortalError as exc:
        raise InstallError(401, f"the portal did not confirm the token: {exc.code or exc.description}") from exc
    if not _truthy(profile.get("ADMIN")):
        raise InstallError(403, "only a portal administrator can install the app")
    scope = ""
    if isinstance(app_info, dict):
        scope = str(app_info.get("SCOPE") or app_info.get("scope") or "")
        if isinstance(app_info.get("SCOPE"), list):
            scope = ",".join(app_info["SCOPE"])
    if not scope:
        try:
            granted = client.call("scope")
            if isinstance(granted, list):
                scope = ",".join(str(s) for s in granted)
        except PortalError:
            scope = ""
    time_zone, server_time = None, None
    try:
        answer = client.call("server.time")
        time_zone = utc_offset_name(answer)
        server_time = dt.datetime.fromisoformat(answer).astimezone(dt.timezone.utc).replace(tzinfo=None)
    except (PortalError, TypeError, ValueError):
        pass
    return {"scope": scope, "user_id": _int(profile.get("ID"), 0) or None, "time_zone": time_zone,
            "server_time": server_time}


def utc_offset_name(server_time) -> str | None:
    """`server.time` answers an ISO time with the portal's offset; keep the offset ("+03:00")."""
    if not isinstance(server_time, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(server_time)
    except ValueError:
        return None
    offset = moment.utcoffset()
    if offset is None:
        return None
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def bx24_script_url(domain: str) -> str:
    """The devportal serves its BX24.js shim itself; real portals load Bitrix24's."""
    host = domain.split(":")[0]
    if host in ("127.0.0.1", "localhost") or host.endswith(".localhost") or host.endswith(".test"):
        return f"//{domain}/bx24.js"
    return "//api.bitrix24.com/api/v1/"


def installer_page(domain: str, public_url: str, outcome: InstallOutcome) -> str:
    script = html.escape(bx24_script_url(domain), quote=True)
    return f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><title>Nezabyt — установка</title>
<script src="{script}"></script></head>
<body>
<h1>Nezabyt установлен</h1>
<p>Поле статуса, вкладки в карточках и обработчики событий зарегистрированы.</p>
<script>
BX24.init(function () {{ BX24.installFinish(); }});
</script>
</body></html>
"""


def _truthy(value) -> bool:
    return value is True or str(value).upper() in ("Y", "1", "TRUE")


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
