"""IDs that come from outside (events, robot calls, pages, files): a positive whole number that fits
the integer columns they are stored in and looked up by, or nothing."""
from __future__ import annotations

import re
from typing import Any

# Entity, user and row IDs live in Integer columns (PostgreSQL int4); Bitrix24's own are int too.
# A longer number is no ID of ours: storing it fails on PostgreSQL, binding it fails on SQLite.
MAX_ID = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII digits only ("²".isdigit() is True), and never a 4,300-digit int()


def parse_id(value: Any) -> int | None:
    """`value` (text or int) as an ID from 1 to MAX_ID, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    return number if 0 < number <= MAX_ID else None
