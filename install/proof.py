"""The install's proof: the claimed portal's address is allowed, Bitrix24's authorization server
confirms the token is this app's on that portal, the user is an admin; and the scope and time zone."""
from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import urlsplit

from addon.bitrix.client import user_client
from addon.bitrix.errors import PortalError
from addon.bitrix.errors import is_temporary
from addon.bitrix.scope import scope_text
from addon.bitrix.tokens import token_app_info
from addon.options import parse_time_zone
from install.address import PortalAddressRefused, check_portal_address
from install.claim import Claim, InstallError, int_or

log = logging.getLogger(__name__)


def check_address(settings, claim: Claim) -> None:
    """No request of ours goes to a private, loopback or link-local address or over plain http
    (unless the settings allow the local devportal)."""
    parts = urlsplit(claim.client_endpoint)
    try:
        check_portal_address(parts.scheme, parts.hostname or "", parts.port, settings.allow_private_portals)
    except PortalAddressRefused as exc:
        log.warning("install claim for %s refused: %s", claim.domain, exc.reason)
        raise InstallError(400, "the portal's address is not allowed: a Bitrix24 portal is reached over https "
                                "at a public address") from exc
    except ValueError as exc:  # a port out of range
        raise InstallError(400, "bad DOMAIN") from exc


NOT_CONFIRMED = "the portal did not confirm the install: open the app from the portal and try again"
BUSY = "the portal is busy right now; nothing was changed: try the install again in a minute"


def prove(settings, claim: Claim, pace=None) -> dict:
    """The authorization server (settings.oauth_url, Bitrix24's own) must say the claimed token is
    this app's (our client_id) on the claimed portal (member_id, domain); only then is the portal
    itself asked: the user must be an admin. Also reads the granted scope and the portal's UTC
    offset for the default time zone. Refusals answer one text, whatever the claimed host did."""
    if not settings.client_id:
        raise InstallError(503, "the app has no NEZABYT_CLIENT_ID: installs cannot be confirmed")
    info = _authorization_server_app_info(settings, claim)
    install = info.get("install") if isinstance(info.get("install"), dict) else {}
    mismatch = [name for name, ours, theirs in (
        ("client_id", settings.client_id, info.get("client_id")),
        ("member_id", claim.member_id, str(install.get("member_id") or "").lower()),
        ("domain", claim.domain, str(install.get("domain") or "").lower())) if ours != theirs]
    if mismatch:
        log.warning("install claim for %s refused: the authorization server's %s differ", claim.domain,
                    "/".join(mismatch))
        raise InstallError(401, NOT_CONFIRMED)
    client = user_client(claim.client_endpoint, claim.access_token, pace=pace)
    try:
        profile = client.call("profile") or {}
    except PortalError as exc:
        if is_temporary(exc):  # the rate limit or a 5xx outlasted the web request's deadline
            log.warning("install of %s: the portal is busy (%s)", claim.domain, exc.code or exc.http_status)
            raise InstallError(503, BUSY) from exc
        log.warning("install claim for %s refused: profile answered %s", claim.domain, exc.code or exc.http_status)
        raise InstallError(401, NOT_CONFIRMED) from exc
    if not isinstance(profile, dict) or not _truthy(profile.get("ADMIN")):
        raise InstallError(403, "only a portal administrator can install the app")
    scope = scope_text(claim.scope or info.get("scope") or install.get("scope"))
    if not scope:
        try:
            scope = scope_text(client.call("scope"))
        except PortalError:
            scope = ""
    # The installing admin's zone name (profile.TIME_ZONE, api-reference/common/users/profile.md)
    # keeps the digest at its hour across DST; without one, the portal's UTC offset (server.time).
    time_zone, server_time = zone_name(profile.get("TIME_ZONE")), None
    if time_zone is None:
        try:
            answer = client.call("server.time")
            time_zone = utc_offset_name(answer)
            server_time = dt.datetime.fromisoformat(answer).astimezone(dt.timezone.utc).replace(tzinfo=None)
        except (PortalError, TypeError, ValueError):
            pass
    return {"scope": scope, "user_id": int_or(profile.get("ID"), 0) or None, "time_zone": time_zone,
            "server_time": server_time}


def zone_name(value) -> str | None:
    """A time zone name the portal gave ("Europe/Berlin"), if it is one we know."""
    name = str(value or "").strip()
    if not name or "/" not in name or parse_time_zone(name) is None:
        return None
    return name


def _authorization_server_app_info(settings, claim: Claim) -> dict:
    try:
        return token_app_info(settings, claim.access_token)
    except PortalError as exc:
        log.warning("install claim for %s not confirmed by the authorization server: %s %s", claim.domain,
                    exc.http_status, exc.code[:64])
        if exc.code == "NETWORK_ERROR" or (exc.http_status or 0) >= 500:
            raise InstallError(503, "the Bitrix24 authorization server did not answer: try the install again") from exc
        raise InstallError(401, NOT_CONFIRMED) from exc


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


def _truthy(value) -> bool:
    return value is True or str(value).upper() in ("Y", "1", "TRUE")
