"""The token store: portal tokens encrypted at rest, and the one refresh path every process shares.

A refresh token can be used once. Web requests and several workers may all hit an expired token
at the same moment, so `refresh` takes the portal's row lock (FOR UPDATE on PostgreSQL, a
per-process lock on SQLite, which has no row locks) and, once it holds it, refreshes only if the
token it was given is still the stored one: whoever comes second uses the fresh pair.

The refresh (it carries the app's client secret) goes only to the authorization server of the
settings (`oauth_url`, Bitrix24's https://oauth.bitrix.info/), never to an address a portal or an
install claim names: a forged install could otherwise name its own server and collect the secret.
"""
from __future__ import annotations

import datetime as dt
import threading

import requests

from addon.crypto import constant_time_equal
from addon.db import unit_of_work
from addon.models import PORTAL_ACTIVE, PORTAL_NEEDS_REAUTH, PORTAL_UNINSTALLED, Portal, utcnow
from addon.bitrix.errors import PortalAuthError, PortalError

# Answers of the auth server that mean "this app cannot use its tokens any more".
# PAYMENT_REQUIRED is not among them (settings/oauth/error-codes.md): the subscription lapsed, the
# auth server issues no tokens until it is paid, and then the same refresh token works again — the
# portal pauses (every call fails as temporary) and resumes by itself, with no reinstall.
DEAD_GRANT_ERRORS = ("invalid_grant", "invalid_client", "NOT_INSTALLED")
TOKEN_HTTP_TIMEOUT = 10

_sqlite_locks: dict[tuple[str, int], threading.Lock] = {}
_sqlite_locks_guard = threading.Lock()


def token_url(oauth_url: str) -> str:
    """https://oauth.bitrix.info/ → https://oauth.bitrix.info/oauth/token/"""
    return f"{oauth_url.rstrip('/')}/oauth/token/"


def app_info_url(oauth_url: str) -> str:
    """The authorization server's app.info: which app and which portal a token belongs to."""
    return f"{oauth_url.rstrip('/')}/rest/app.info"


def save_tokens(session, portal: Portal, access: str, refresh: str | None, expires_at: dt.datetime | None) -> None:
    """Store a token pair on the portal, encrypted (the caller commits)."""
    cipher = _cipher_for(session)
    portal.access_token_enc = cipher.encrypt(access)
    if refresh:
        portal.refresh_token_enc = cipher.encrypt(refresh)
    portal.expires_at = expires_at


def save_application_token(session, portal: Portal, application_token: str) -> None:
    portal.application_token_enc = _cipher_for(session).encrypt(application_token)


def application_token(session, portal: Portal) -> str | None:
    return _cipher_for(session).decrypt(portal.application_token_enc)


def access_token(services, portal_id: int) -> str:
    with services.sessions() as session:
        portal = session.get(Portal, portal_id)
        if portal is None:
            raise PortalError("PORTAL_NOT_FOUND", f"no portal {portal_id}")
        _ensure_usable(portal)
        token = services.cipher.decrypt(portal.access_token_enc)
        if not token:
            raise PortalAuthError("NO_TOKEN", "the portal has no access token: reinstall the app", 401)
        return token


def usable_token(services, portal: Portal) -> str | None:
    """The access token of a portal row already read, or None when the row cannot give one (the
    portal needs re-authorization, is uninstalled, has no token): access_token() then says why."""
    try:
        _ensure_usable(portal)
    except PortalAuthError:
        return None
    return services.cipher.decrypt(portal.access_token_enc) or None


def refresh(services, portal_id: int, stale_token: str | None) -> str:
    """A fresh access token. Makes at most one call to the auth server however many callers race;
    a dead refresh token marks the portal needs_reauth and raises PortalAuthError (no retry)."""
    lock = _process_lock(services, portal_id)
    with lock:
        failure: PortalAuthError | None = None
        with unit_of_work(services.sessions) as session:
            portal = session.get(Portal, portal_id, with_for_update=True, populate_existing=True)
            if portal is None:
                raise PortalError("PORTAL_NOT_FOUND", f"no portal {portal_id}")
            _ensure_usable(portal)
            current = services.cipher.decrypt(portal.access_token_enc)
            if current and stale_token is not None and not constant_time_equal(current, stale_token):
                return current  # someone refreshed while we waited for the lock
            refresh_token = services.cipher.decrypt(portal.refresh_token_enc)
            answer = _ask_auth_server(services.settings, refresh_token)
            if "error" in answer or not answer.get("access_token"):
                code = str(answer.get("error") or "NO_TOKEN")
                description = str(answer.get("error_description") or "")
                if code in DEAD_GRANT_ERRORS or not refresh_token:
                    portal.status = PORTAL_NEEDS_REAUTH
                    portal.status_reason = f"token refresh refused: {code} {description}".strip()
                failure = PortalAuthError(code, description, answer.get("_http_status"), "oauth/token")
            else:
                expires = answer.get("expires")
                expires_at = (unix_to_utc(expires) if expires else
                              utcnow() + dt.timedelta(seconds=int(answer.get("expires_in") or 3600)))
                save_tokens(session, portal, answer["access_token"], answer.get("refresh_token"), expires_at)
                if answer.get("client_endpoint"):
                    # follows a renamed portal
                    portal.client_endpoint = answer["client_endpoint"]
                current = answer["access_token"]
        # committed (the new pair, or the needs_reauth mark) before anyone is told
        if failure is not None:
            raise failure
        return current


def _ask_auth_server(settings, refresh_token: str | None) -> dict:
    if not refresh_token:
        return {"error": "invalid_grant", "error_description": "no refresh token stored"}
    try:
        # No redirects: the secret stays with the one server named in the settings.
        response = requests.get(token_url(settings.oauth_url), timeout=TOKEN_HTTP_TIMEOUT, allow_redirects=False,
                                params={"grant_type": "refresh_token", "client_id": settings.client_id,
                                        "client_secret": settings.client_secret, "refresh_token": refresh_token})
    except requests.RequestException as exc:
        raise PortalError("NETWORK_ERROR", str(exc), None, "oauth/token") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": f"HTTP_{response.status_code}", "error_description": response.text[:200]}
    if not isinstance(answer, dict):
        answer = {"error": f"HTTP_{response.status_code}"}
    if response.status_code >= 500 and "error" in answer:
        # the auth server is down: not the token's fault, do not mark the portal
        raise PortalError(str(answer["error"]), str(answer.get("error_description", "")),
                          response.status_code, "oauth/token")
    answer["_http_status"] = response.status_code
    return answer


def token_app_info(settings, access_token: str) -> dict:
    """`app.info` at the authorization server for an access token: whose app (client_id) on which
    portal (install: member_id, domain, client_endpoint), the scope and the user. The documented way
    to a trusted answer (settings/oauth/simple-way.md): the token's holder cannot forge it.
    Raises PortalError (NETWORK_ERROR, or the server's error code and HTTP status)."""
    method = "app.info (authorization server)"
    try:
        response = requests.get(app_info_url(settings.oauth_url), params={"auth": access_token},
                                timeout=TOKEN_HTTP_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise PortalError("NETWORK_ERROR", exc.__class__.__name__, None, method) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    result = body.get("result") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(result, dict):
        code = str(body.get("error") or "") if isinstance(body, dict) else ""
        raise PortalError(code or f"HTTP_{response.status_code}", "", response.status_code, method)
    return result


def _ensure_usable(portal: Portal) -> None:
    if portal.status == PORTAL_NEEDS_REAUTH:
        raise PortalAuthError("NEEDS_REAUTH", portal.status_reason or "the portal needs re-authorization", 401)
    if portal.status == PORTAL_UNINSTALLED:
        raise PortalAuthError("UNINSTALLED", "the app is uninstalled from this portal", 401)


def mark_active(portal: Portal) -> None:
    portal.status = PORTAL_ACTIVE
    portal.status_reason = None


def _process_lock(services, portal_id: int):
    if not services.settings.is_sqlite:
        return _NoLock()  # PostgreSQL: the row lock serialises processes and threads alike
    key = (services.settings.database_url, portal_id)
    with _sqlite_locks_guard:
        return _sqlite_locks.setdefault(key, threading.Lock())


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cipher_for(session):
    """The cipher travels on the session's info (set by build_services)."""
    cipher = session.info.get("nezabyt_cipher")
    if cipher is None:
        raise RuntimeError("session has no token cipher: create sessions with services.sessions")
    return cipher


def unix_to_utc(ts: float | int | str) -> dt.datetime:
    """A unix time from the portal as a naive UTC datetime (how we store times)."""
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).replace(tzinfo=None)
