"""A robot call as the handlers see it (`RobotCall`), its property values read the way Bitrix24
sends them (a list, a dict of values, `user_5`, "Y"), and the names of the CRM item's fields it runs
on; the runner parses stored calls into it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

OWNER_TYPE = {"lead": 1, "deal": 2}
TASK_PREFIX = {"lead": "L", "deal": "D", "contact": "C", "company": "CO"}
STAGE_FIELD = {"lead": "STATUS_ID", "deal": "STAGE_ID"}
SEMANTIC_FIELD = {"lead": "STATUS_SEMANTIC_ID", "deal": "STAGE_SEMANTIC_ID"}

@dataclass
class RobotCall:
    event_id: int
    code: str
    robot: str
    document_type: str
    entity_id: int
    event_token: str
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def document_id(self) -> str:
        return f"{self.document_type.upper()}_{self.entity_id}"



# --- property values (externalised by Bitrix24) ----------------------------------------------------

def prop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            out.extend(prop_list(v))
        return out
    return [part.strip() for part in str(value).split(",") if part.strip()]


def prop_users(value: Any) -> list[int]:
    """`user_5`, `5` or lists of them; group codes like `group_e1` are not users."""
    users = []
    for part in prop_list(value):
        m = re.fullmatch(r"(?:user_)?(\d+)", part)
        if m:
            users.append(int(m.group(1)))
    return users


def _first(value: Any) -> str:
    """The first value of a property (a multiple one arrives as a list), as trimmed text."""
    while isinstance(value, (list, tuple, dict)):
        value = (list(value.values()) if isinstance(value, dict) else list(value)) or [None]
        value = value[0]
    return "" if value is None else str(value).strip()


def prop_int(value: Any, default: int) -> int:
    try:
        return int(_first(value)) if _first(value) else default
    except ValueError:
        return default


def prop_float(value: Any, default: float) -> float:
    try:
        return float(_first(value).replace(",", ".")) if _first(value) else default
    except ValueError:
        return default


def prop_bool(value: Any, default: bool) -> bool:
    first = _first(value)
    return first.upper() in ("Y", "1", "TRUE", "YES") if first else default


def prop_str(value: Any) -> str:
    return _first(value)


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "", False) else None
    except (TypeError, ValueError):
        return None


def is_closed(document_type: str, item: dict) -> bool:
    if document_type == "deal" and str(item.get("CLOSED") or "N") == "Y":
        return True
    return str(item.get(SEMANTIC_FIELD[document_type]) or "P") in ("S", "F")
