"""What one doctor check found: ✓ or ✗, what it saw, and for ✗ the fix in one line."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""
    portal: str | None = None  # the portal's domain, for per-portal checks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)
