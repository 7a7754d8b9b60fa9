"""Bitrix24's error codes, each classified once: what it means for the call and for the portal.

Sources (bitrix24/b24restdocs): `_includes/system-errors.md` and `error-codes.md` (the errors any
method may answer, with their HTTP status), `settings/oauth/error-codes.md` (the auth server's),
`settings/performance/limits.md` (QUERY_LIMIT_EXCEEDED, OPERATION_TIME_LIMIT, OVERLOAD_LIMIT),
`api-reference/crm/contacts/crm-contact-get.md` (legacy crm.* errors with an empty code).

Kinds:
- TEMPORARY: the portal or the way to it is struggling; the same call may work later.
- RATE_LIMIT: the leaky bucket (503 QUERY_LIMIT_EXCEEDED) or a method's time budget (429
  OPERATION_TIME_LIMIT): back off or park the method, then retry.
- BLOCKED: OVERLOAD_LIMIT, a manual block of the portal's REST API by Bitrix24's support: stop
  calling that portal until an operator clears it; retrying only prolongs it.
- TOKEN_EXPIRED: refresh the access token once and repeat the call.
- GRANT_DEAD: the app cannot get tokens any more (refresh token dead, app removed): reinstall.
- PAYMENT: the app's subscription lapsed (PAYMENT_REQUIRED): the portal pauses and resumes by
  itself when calls work again; nothing to reinstall.
- PORTAL_MOVED: the portal answered a redirect (its domain changed).
- PERMANENT: a refusal a retry cannot fix (a deleted item, a bad argument, no right).
"""
from __future__ import annotations

import time

TEMPORARY = "temporary"
RATE_LIMIT = "rate_limit"
BLOCKED = "blocked"
TOKEN_EXPIRED = "token_expired"
GRANT_DEAD = "grant_dead"
PAYMENT = "payment"
PORTAL_MOVED = "portal_moved"
PERMANENT = "permanent"

# What a 429 parks a method for when the portal did not tell us its operating_reset_at.
DEFAULT_PARK_SECONDS = 600

# code -> (kind, the HTTP status the docs give it). Codes are matched case-sensitively first
# (Bitrix24 has both `expired_token` and `INVALID_REQUEST`), then case-insensitively.
CODES: dict[str, tuple[str, int | None]] = {
    # system errors (_includes/system-errors.md)
    "INTERNAL_SERVER_ERROR": (TEMPORARY, 500),
    "ERROR_UNEXPECTED_ANSWER": (TEMPORARY, 500),
    "PORTAL_DELETED": (TEMPORARY, 500),
    "QUERY_LIMIT_EXCEEDED": (RATE_LIMIT, 503),
    "OPERATION_TIME_LIMIT": (RATE_LIMIT, 429),
    "OVERLOAD_LIMIT": (BLOCKED, 503),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": (PERMANENT, 405),
    "ERROR_BATCH_LENGTH_EXCEEDED": (PERMANENT, 400),
    "NO_AUTH_FOUND": (TOKEN_EXPIRED, 401),
    "INVALID_REQUEST": (PERMANENT, 400),
    "ACCESS_DENIED": (PERMANENT, 403),
    "INVALID_CREDENTIALS": (PERMANENT, 403),
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": (PERMANENT, 404),
    "insufficient_scope": (PERMANENT, 403),
    "expired_token": (TOKEN_EXPIRED, 401),
    "invalid_token": (TOKEN_EXPIRED, 401),
    "user_access_error": (PERMANENT, 403),
    "WRONG_AUTH_TYPE": (PERMANENT, 403),
    "authorization_error": (GRANT_DEAD, 401),
    "METHOD_CONFIRM_WAITING": (TEMPORARY, 401),
    "ERROR_METHOD_NOT_FOUND": (PERMANENT, 404),
    "ERROR_ARGUMENT": (PERMANENT, 400),
    "NOT_FOUND": (PERMANENT, 404),
    "USER_ID_EMPTY": (PERMANENT, 400),
    "MESSAGE_EMPTY": (PERMANENT, 400),
    # the auth server (settings/oauth/error-codes.md)
    "invalid_request": (PERMANENT, 400),
    "invalid_client": (GRANT_DEAD, 401),
    "invalid_grant": (GRANT_DEAD, 401),
    "invalid_scope": (PERMANENT, 403),
    "NOT_INSTALLED": (GRANT_DEAD, 401),
    "PAYMENT_REQUIRED": (PAYMENT, 402),
    # ours: the way to the portal
    "NETWORK_ERROR": (TEMPORARY, None),
    "READ_TIMEOUT": (TEMPORARY, None),
    "SERVER_UNAVAILABLE": (TEMPORARY, 503),
    "PORTAL_MOVED": (PORTAL_MOVED, 302),
    "NEEDS_REAUTH": (GRANT_DEAD, 401),
    "UNINSTALLED": (GRANT_DEAD, 401),
    "NO_TOKEN": (GRANT_DEAD, 401),
    "PORTAL_NOT_FOUND": (PERMANENT, None),
}
_CODES_FOLDED = {code.lower(): entry for code, entry in CODES.items()}

# Legacy crm.contact/company/deal.* errors come with an empty code; their text says what happened.
_PERMANENT_TEXTS = ("not found", "access denied", "error_argument", "id is not defined")


def kind_of(code: str, http_status: int | None = None, description: str = "") -> str:
    entry = CODES.get(code) or _CODES_FOLDED.get((code or "").lower())
    if entry is not None:
        return entry[0]
    if any(s in f"{code} {description}".lower() for s in _PERMANENT_TEXTS):
        return PERMANENT
    if http_status in (301, 302, 307, 308):
        return PORTAL_MOVED
    if http_status is not None and 400 <= http_status < 500 and http_status not in (401, 408, 429):
        return PERMANENT  # a module's own code (ERROR_CORE, ERROR_ADD…): RestException answers 400
    return TEMPORARY


def http_status_of(code: str) -> int | None:
    entry = CODES.get(code) or _CODES_FOLDED.get((code or "").lower())
    return entry[1] if entry else None


class PortalError(Exception):
    """An error answered by the portal (or the way to it), with Bitrix24's own code."""

    # True for a write whose answer was lost (a timeout, a 5xx): it may have been applied, so it is
    # confirmed against the portal before it is sent again.
    uncertain = False

    def __init__(self, code: str, description: str = "", http_status: int | None = None,
                 method: str | None = None):
        super().__init__(f"{method or '?'}: {code or '(no code)'} {description}".strip())
        self.code = code
        self.description = description
        self.http_status = http_status
        self.method = method

    @property
    def kind(self) -> str:
        return kind_of(self.code, self.http_status, self.description)

    @property
    def permanent(self) -> bool:
        return self.kind == PERMANENT


class PortalAuthError(PortalError):
    """The portal's tokens are dead (refresh refused) or the portal needs re-authorization."""

    @property
    def kind(self) -> str:
        kind = kind_of(self.code, self.http_status, self.description)
        return kind if kind in (TOKEN_EXPIRED, PAYMENT, TEMPORARY) else GRANT_DEAD


class MethodParked(PortalError):
    """429 OPERATION_TIME_LIMIT: the method is parked for this portal until `until` (unix time)."""

    def __init__(self, method: str, until: float, description: str = ""):
        super().__init__("OPERATION_TIME_LIMIT", description or f"parked until {int(until)}", 429, method)
        self.until = until


class PortalBlocked(PortalError):
    """OVERLOAD_LIMIT: Bitrix24 blocked this portal's REST API by hand; no call goes out until the
    block is cleared (the settings page says so)."""

    def __init__(self, description: str = "", method: str | None = None):
        super().__init__("OVERLOAD_LIMIT", description or "REST API is blocked due to overload", 503, method)


class PortalBusy(PortalError):
    """The portal kept refusing for longer than the caller can wait (a web request's deadline):
    nothing was done, try again in a moment."""


class PortalMoved(PortalError):
    """The portal answered a redirect: its REST API lives at `location` now."""

    def __init__(self, location: str, method: str | None = None, http_status: int = 302):
        super().__init__("PORTAL_MOVED", f"moved to {location}", http_status, method)
        self.location = location


def error_of(body, http_status: int | None, method: str) -> PortalError:
    """The typed error of an error envelope (`{"error", "error_description"}`) or a bare body."""
    if isinstance(body, dict):
        code = str(body.get("error", ""))
        description = str(body.get("error_description", ""))
    else:
        code, description = f"HTTP_{http_status}", str(body)[:200]
    if code == "OPERATION_TIME_LIMIT":
        return MethodParked(method, time.time() + DEFAULT_PARK_SECONDS, description)
    if code == "OVERLOAD_LIMIT":
        return PortalBlocked(description, method)
    if http_status == 401 or kind_of(code, http_status, description) == GRANT_DEAD:
        return PortalAuthError(code, description, http_status, method)
    return PortalError(code, description, http_status, method)


def is_temporary(error) -> bool:
    """The portal may do it a moment later: busy, rate-limited, struggling, blocked, unpaid."""
    if isinstance(error, PortalBusy):
        return True
    return getattr(error, "kind", TEMPORARY) in (TEMPORARY, RATE_LIMIT, BLOCKED, PAYMENT)


def is_permanent(error) -> bool:
    """A refusal a retry cannot fix (a deleted item, a used event token, a bad argument, an empty
    recipient, a scope or right the app lacks); anything else — 503, 429, the network, a lapsed
    subscription — is worth another pass."""
    code = str(getattr(error, "code", "") or "")
    return kind_of(code, getattr(error, "http_status", None), str(getattr(error, "description", ""))) == PERMANENT


def is_not_found(error) -> bool:
    """The item asked for does not exist (or is no longer ours to see): the only error that may
    be read as "empty"."""
    code = str(getattr(error, "code", "") or "")
    text = f"{code} {getattr(error, 'description', '')}".lower()
    if code.upper() == "ERROR_METHOD_NOT_FOUND":
        return False  # the method is missing, not the item
    return code.upper() == "NOT_FOUND" or "not found" in text or getattr(error, "http_status", None) == 404
