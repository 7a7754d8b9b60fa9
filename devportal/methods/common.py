"""What every family of devportal REST methods shares: registering a handler, reading its
arguments as Bitrix24 does, the admin and handler-URL checks, and the text length limit."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from devportal.errors import RestError, access_denied
from devportal.phpquery import as_list


def registrar(methods: dict):
    """A `@method(*names)` decorator that registers a handler in `methods` under each (lower-cased) name."""
    def method(*names):
        def register(fn):
            for name in names:
                methods[name.lower()] = fn
            return fn
        return register
    return method


def arg(params: dict, name: str, default=None):
    """Top-level keys are case-insensitive in Bitrix24."""
    if name in params:
        return params[name]
    lower = name.lower()
    for key, value in params.items():
        if str(key).lower() == lower:
            return value
    return default


def as_dict(value) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return {}


def select_list(value) -> list[str]:
    return [str(v).upper() for v in as_list(value)]


def require_admin(portal, ctx) -> None:
    if not portal.is_admin(ctx.user_id):
        raise access_denied("Access denied! Administrator access required")


def check_handler(url) -> None:
    parts = urlsplit(str(url or ""))
    if parts.scheme not in ("http", "https"):
        raise RestError("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported event handler protocol", 400)
    if "." not in (parts.hostname or ""):
        raise RestError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL", 400)


# The docs name no length limit for a notification's MESSAGE (im-notify-system-add.md: only ATTACH,
# 60,000 characters), a timeline COMMENT (crm-timeline-comment-add.md) or a POST_MESSAGE
# (log-blogpost-add.md), yet a real portal refuses or truncates a text long enough. The devportal
# refuses any of them over TEXT_LIMIT characters with a 400, so a sender that does not keep its
# texts short finds out here rather than on a customer's portal.
TEXT_LIMIT = 20_000


def text_too_long(value) -> bool:
    return isinstance(value, str) and len(value) > TEXT_LIMIT
