"""The app's granted scope as Bitrix24 sends it: a list (the `scope` method), or one string whose
items are separated by commas (the installer page, app.info of the authorization server) or by
spaces (ONAPPINSTALL, ONAPPUPDATE: api-reference/common/events/on-app-update.md). Stored as one
comma-separated string."""
from __future__ import annotations

import re


def parse_scope(value) -> list[str]:
    """The scope's items, lower-case, each once, in the order given."""
    parts = value if isinstance(value, (list, tuple, set)) else re.split(r"[\s,]+", str(value or ""))
    seen: dict[str, None] = {}
    for part in parts:
        item = str(part).strip().lower()
        if item:
            seen.setdefault(item, None)
    return list(seen)


def scope_text(value) -> str:
    return ",".join(parse_scope(value))
