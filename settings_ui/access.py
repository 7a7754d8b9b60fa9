"""Who is looking at the settings page: the user's token checked against the portal, then a signed,
short-lived page token that travels in every form and fetch (iframes get no third-party cookies)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

PAGE_TOKEN_SALT = "nezabyt.settings-ui.page"
PAGE_TOKEN_MAX_AGE = 3600  # one hour: the portal's own AUTH_ID lives as long
TOKEN_FIELD = "t"
TOKEN_HEADER = "X-Nezabyt-Token"
DEV_HOSTS = ("127.0.0.1", "localhost")


class AccessDenied(Exception):
    """The page must not be shown; `reason` is a key of the i18n texts."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PageUser:
    """What the page token carries: enough to serve every later request without the portal."""

    portal_id: int
    user_id: int
    is_admin: bool
    lang: str
    domain: str

    @property
    def bx24_script(self) -> str:
        """BX24.js from the devportal itself, else Bitrix24's CDN."""
        host = self.domain.split(":")[0]
        return f"//{self.domain}/bx24.js" if host in DEV_HOSTS else "//api.bitrix24.com/api/v1/"

    @property
    def portal_url(self) -> str:
        """The portal's own address (a link's fallback where BX24.openPath is not there)."""
        host = self.domain.split(":")[0]
        return f"{'http' if host in DEV_HOSTS else 'https'}://{self.domain}"


class PageTokens:
    """Issues and reads page tokens; `clock` is injectable so expiry is tested without waiting."""

    def __init__(self, secret_key: str, clock: Callable[[], float] = time.time,
                 max_age: int = PAGE_TOKEN_MAX_AGE):
        clocked = type("ClockedSigner", (TimestampSigner,), {"get_timestamp": lambda _self: int(clock())})
        self._serializer = URLSafeTimedSerializer(secret_key, salt=PAGE_TOKEN_SALT, signer=clocked)
        self.max_age = max_age

    def issue(self, user: PageUser) -> str:
        return self._serializer.dumps(asdict(user))

    def domain_of(self, token: str | None) -> str | None:
        """The portal domain a genuine token was issued for, expired or not (None if forged): the
        page that says "expired" is still framed by that portal."""
        try:
            data = self._serializer.loads(token or "")  # no max_age: the signature alone
        except BadSignature:
            return None
        return str(data["domain"]) if isinstance(data, dict) and data.get("domain") else None

    def read(self, token: str | None) -> PageUser:
        if not token:
            raise AccessDenied("no_token")
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except SignatureExpired as exc:
            raise AccessDenied("expired") from exc
        except BadSignature as exc:
            raise AccessDenied("tampered") from exc
        try:
            return PageUser(portal_id=int(data["portal_id"]), user_id=int(data["user_id"]),
                            is_admin=bool(data["is_admin"]), lang=str(data["lang"]), domain=str(data["domain"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AccessDenied("tampered") from exc


def page_language(lang: str | None) -> str:
    """Russian by default; English when the portal says en (and for other non-Russian languages
    Bitrix24 has no Russian UI for, English reads better than Russian)."""
    lang = (lang or "ru").lower()[:2]
    return "ru" if lang in ("ru", "ua", "by", "kz") else "en"


def verify_user(services, member_id: str, auth_id: str, lang: str | None) -> PageUser:
    """Check the opener's AUTH_ID against the portal it claims (the stored client endpoint, never
    the DOMAIN in the query) with `user.current` and `user.admin`."""
    from sqlalchemy import select

    from addon.models import PORTAL_UNINSTALLED, Portal
    from addon.bitrix.client import portal_client, user_client
    from addon.bitrix.errors import PortalError, PortalMoved, is_temporary
    from addon.bitrix.pace import shared_pace

    if not member_id or not auth_id:
        raise AccessDenied("no_auth")
    with services.sessions() as session:
        portal = session.scalars(select(Portal).where(Portal.member_id == member_id)).first()
        if portal is None or portal.status == PORTAL_UNINSTALLED:
            raise AccessDenied("unknown_portal")
        portal_id, endpoint, domain = portal.id, portal.client_endpoint, portal.domain
    pace = shared_pace(services, portal_id)

    def ask(at: str):
        client = user_client(at, auth_id, services.settings, pace=pace)
        return client.call("user.current") or {}, client.call("user.admin")

    try:
        try:
            me, is_admin = ask(endpoint)
        except PortalMoved:
            # The portal changed its address (settings/how-to-call-rest-api/change-domen.md). The
            # user's token never follows a redirect; the app's own client does, from the stored
            # address, and keeps the new one: the user is then asked there.
            with portal_client(services, portal_id, web=True) as app_client:
                app_client.call("app.info")
                endpoint, domain = app_client.client_endpoint, urlsplit(app_client.client_endpoint).netloc.lower()
            me, is_admin = ask(endpoint)
    except PortalError as exc:
        if is_temporary(exc):
            raise  # a busy portal says nothing about the token: the app answers "try again" (503)
        raise AccessDenied("bad_auth", getattr(exc, "code", "")) from exc
    if not me.get("ID"):
        raise AccessDenied("bad_auth")
    return PageUser(portal_id=portal_id, user_id=int(me["ID"]), is_admin=is_admin in (True, "true", "Y", 1, "1"),
                    lang=page_language(lang), domain=domain)
