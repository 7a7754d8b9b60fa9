"""The daily run's record in its JobRun: the run's key, the summary it keeps, and what a pass sent
and has not yet added to that summary."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DailySummary:
    portal_id: int
    day: dt.date
    decayed: int = 0
    steps: int = 0
    losses: int = 0
    transfers: int = 0
    warnings: int = 0
    messages: int = 0
    feed_posts: int = 0
    timeline_comments: int = 0
    writes_sent: int = 0
    messages_sent: int = 0
    already_done: bool = False
    transitions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["day"] = self.day.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DailySummary":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["day"] = dt.date.fromisoformat(known["day"])
        return cls(**known)

    def text(self) -> str:
        head = (f"portal {self.portal_id}, day {self.day.isoformat()}: "
                f"{self.decayed} clients decayed ({self.steps} steps), {self.losses} lost, "
                f"{self.transfers} transferred, {self.warnings} warnings, {self.messages} messages, "
                f"{self.writes_sent} writes sent, {self.messages_sent} messages sent")
        if self.already_done:
            head += " (already done for this day)"
        lines = [head] + [f"  {k}: {v}" for k, v in sorted(self.transitions.items())]
        return "\n".join(lines)


def daily_key(portal_id: int, day: dt.date) -> str:
    return f"daily:{portal_id}:{day.isoformat()}"


@dataclass
class Tally:
    """Writes and messages sent by this pass and not yet added to the JobRun's summary."""

    writes: int = 0
    messages: int = 0
