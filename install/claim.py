"""What an install claims (whose portal, where, with which tokens), read from the installer page's
POST or from ONAPPINSTALL/ONAPPUPDATE, and how an install answers: InstallError, InstallOutcome."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from addon.bitrix.scope import scope_text


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
    app_version: str | None = None
    event: str = "page"


def _need(source: dict, key: str) -> str:
    value = source.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InstallError(400, f"missing {key}")
    return value.strip()


def _valid_domain(domain: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?", domain):
        raise InstallError(400, "bad DOMAIN")
    return domain.lower()


def page_claim(query: dict, form: dict) -> Claim:
    """The claim of POST /install from the portal's installer page (a UI app)."""
    domain = _valid_domain(str(query.get("DOMAIN") or form.get("DOMAIN") or ""))
    protocol = str(query.get("PROTOCOL") or form.get("PROTOCOL") or "1")
    return Claim(
        member_id=_need(form, "member_id").lower(),
        domain=domain,
        client_endpoint=f"{'https' if protocol == '1' else 'http'}://{domain}/rest/",
        server_endpoint=_need(form, "SERVER_ENDPOINT"),
        access_token=_need(form, "AUTH_ID"),
        refresh_token=_need(form, "REFRESH_ID"),
        expires_in=int_or(form.get("AUTH_EXPIRES"), 3600),
        application_token=(form.get("APPLICATION_TOKEN") or None),
        scope=scope_text(form.get("APPLICATION_SCOPE")),
        language=str(query.get("LANG") or form.get("LANG") or "ru")[:8],
    )


APP_EVENTS = ("ONAPPINSTALL", "ONAPPUPDATE")


def event_claim(form: dict) -> Claim:
    """The claim of ONAPPINSTALL (an API-only install, or the event a UI install bound) or ONAPPUPDATE."""
    event = str(form.get("event") or "").upper()
    auth = form.get("auth")
    if not isinstance(auth, dict):
        raise InstallError(400, "missing auth[...]")
    client_endpoint = _need(auth, "client_endpoint")
    parts = urlsplit(client_endpoint)
    domain = _valid_domain(str(auth.get("domain") or parts.netloc))
    if parts.netloc.lower() != domain or parts.scheme not in ("http", "https"):
        raise InstallError(400, "auth[client_endpoint] is not on auth[domain]")
    data = form.get("data") if isinstance(form.get("data"), dict) else {}
    version = str(data.get("VERSION") or "").strip()[:32] or None
    return Claim(
        member_id=_need(auth, "member_id").lower(),
        domain=domain,
        client_endpoint=f"{parts.scheme}://{domain}/rest/",
        server_endpoint=_need(auth, "server_endpoint"),
        access_token=_need(auth, "access_token"),
        refresh_token=(auth.get("refresh_token") or None),
        expires_in=int_or(auth.get("expires_in"), 3600),
        application_token=_need(auth, "application_token"),
        scope=scope_text(auth.get("scope")),
        language=str(data.get("LANGUAGE_ID") or "ru")[:8],
        app_version=version,
        event=event if event in APP_EVENTS else "ONAPPINSTALL",
    )


def int_or(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
