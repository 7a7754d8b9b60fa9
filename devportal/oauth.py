"""The portal's OAuth side: access and refresh tokens, the auth of event POSTs, and the one
authorization server (oauth.bitrix.info) that answers for every devportal of the process."""
from __future__ import annotations

import re
import secrets
import weakref
from datetime import datetime

from devportal.errors import RestError

# Every portal of this process: Bitrix24 has one authorization server for all portals
# (oauth.bitrix.info), so any devportal's /auth/ answers for the tokens of every devportal here.
PORTALS: weakref.WeakSet = weakref.WeakSet()


class TokensMixin:
    """DevPortal's tokens: issuing, expiring, checking and refreshing them."""

    def issue_tokens(self, user_id: int = 1) -> dict:
        with self.lock:
            access = secrets.token_hex(24)
            refresh = secrets.token_hex(24)
            expires = int(self.ts()) + self.token_ttl
            self.access_tokens[access] = {"user_id": int(user_id), "expires": expires}
            self.refresh_tokens[refresh] = {"user_id": int(user_id), "used": False}
            return {"access_token": access, "refresh_token": refresh, "expires": expires,
                    "expires_in": self.token_ttl, "user_id": int(user_id)}

    def expire_tokens(self) -> None:
        with self.lock:
            now = int(self.ts())
            for info in self.access_tokens.values():
                info["expires"] = min(info["expires"], now - 1)

    def authenticate(self, token: str | None) -> int:
        """The user behind an access token, or the 401 the portal answers."""
        if not token:
            raise RestError("NO_AUTH_FOUND", "Wrong authorization data", 401)
        info = self.access_tokens.get(token)
        if info is None or self.app is None:
            raise RestError("invalid_token", "Unable to get application by token", 401)
        if info["expires"] <= self.ts():
            raise RestError("expired_token", "The access token provided has expired.", 401)
        user = self.users.get(info["user_id"])
        if user is None or not user["ACTIVE"]:
            raise RestError("authorization_error", "User is not active", 401)
        return info["user_id"]

    def refresh(self, params: dict) -> tuple[int, dict]:
        """GET /oauth/token/: the auth server's answer (status, body)."""
        grant = params.get("grant_type")
        with self.lock:
            if self.portal_error == "PAYMENT_REQUIRED":  # settings/oauth/error-codes.md: no tokens until paid
                return 400, {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"}
            app = self.app
            if app is None or params.get("client_id") != app["client_id"] \
                    or params.get("client_secret") != app["client_secret"]:
                return 401, {"error": "invalid_client", "error_description": "Invalid client credentials"}
            if grant != "refresh_token":
                return 400, {"error": "invalid_request", "error_description": "Unsupported grant type"}
            info = self.refresh_tokens.get(params.get("refresh_token") or "")
            if info is None or info["used"]:
                return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
            info["used"] = True
            tokens = self.issue_tokens(info["user_id"])
            return 200, {"access_token": tokens["access_token"], "client_endpoint": self.rest_endpoint,
                         "domain": self.domain, "expires": tokens["expires"], "expires_in": self.token_ttl,
                         "member_id": self.member_id, "refresh_token": tokens["refresh_token"],
                         "scope": app["scope"], "server_endpoint": self.auth_endpoint, "status": "L",
                         "user_id": tokens["user_id"]}

    def app_info_for_token(self, token: str | None) -> tuple[int, dict] | None:
        """The authorization server's `app.info` for one of this portal's access tokens (None: not
        ours). Unlike the portal's own `app.info` (ID, CODE, VERSION...), the authorization server
        names the app by its client_id and the installation by member_id and domain: an app checks
        there, at a server it trusts, whose token an install claim carries."""
        with self.lock:
            info = self.access_tokens.get(token or "")
            if info is None or self.app is None:
                return None
            if info["expires"] <= self.ts():
                return 401, {"error": "expired_token", "error_description": "The access token provided has expired."}
            app = self.app
            return 200, {"result": {
                "client_id": app["client_id"], "scope": app["scope"], "user_id": info["user_id"],
                "expires": datetime.fromtimestamp(info["expires"], self.tz).isoformat(timespec="seconds"),
                "install": {"installed": bool(app["installed"]), "version": app["version"], "status": "L",
                            "scope": app["scope"], "domain": self.domain, "uri": self.base_url,
                            "client_endpoint": self.rest_endpoint, "member_id": self.member_id,
                            "member_type": "PORTAL"}}}

    def auth_block(self, user_id: int | None, refresh: bool = False) -> dict:
        """The `auth[...]` of an event or robot POST; without a user (automation) it carries no tokens."""
        app = self.app or {}
        block: dict = {}
        if user_id:
            tokens = self.issue_tokens(user_id)
            block.update(access_token=tokens["access_token"], expires=tokens["expires"],
                         expires_in=self.token_ttl)
            if refresh:
                block["refresh_token"] = tokens["refresh_token"]
        block.update(scope=event_scope(app.get("scope", "")), domain=self.domain, server_endpoint=self.auth_endpoint,
                     status="L", client_endpoint=self.rest_endpoint, member_id=self.member_id)
        if user_id:
            block["user_id"] = int(user_id)
        block["application_token"] = app.get("application_token", "")
        return block


def event_scope(scope: str) -> str:
    """An event's auth[scope] lists the granted scopes separated by spaces
    (api-reference/common/events/on-app-update.md, on-app-install.md)."""
    return " ".join(part for part in re.split(r"[\s,]+", scope or "") if part)


def auth_server_token(params: dict) -> tuple[int, dict]:
    """GET /auth/oauth/token/: refresh at whichever portal issued the refresh token."""
    token = params.get("refresh_token") or ""
    for portal in list(PORTALS):
        with portal.lock:
            known = token in portal.refresh_tokens
        if known:
            return portal.refresh(params)
    if any(p.app and p.app["client_id"] == params.get("client_id") and p.app["client_secret"] ==
           params.get("client_secret") for p in list(PORTALS)):
        return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
    return 401, {"error": "invalid_client", "error_description": "Invalid client credentials"}


def auth_server_app_info(params: dict) -> tuple[int, dict]:
    """/auth/rest/app.info?auth=...: the authorization server's view of a token's app and portal."""
    token = params.get("auth") or params.get("access_token") or ""
    for portal in list(PORTALS):
        answer = portal.app_info_for_token(token)
        if answer is not None:
            return answer
    return 401, {"error": "invalid_token", "error_description": "The access token provided is invalid."}
