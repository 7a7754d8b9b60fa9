"""Debug lookup by entity ID: the service-table row and its full transition history."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from addon.engine import tracked_row
from addon.models import StatusHistory

ROW_FIELDS = ("status", "status_set_on", "last_call_on", "due_on", "warn_on", "assigned_by_id", "previous_status",
              "status_before_deal", "open_deals", "reason", "written_status", "written_at", "last_modified", "title")
HISTORY_FIELDS = ("changed_on", "from_status", "to_status", "cause", "by_user_id", "assigned_by_id", "note",
                  "recorded_at")


def lookup(services, portal_id: int, entity_type: str, entity_id: int) -> dict[str, Any]:
    if entity_type not in ("contact", "company"):
        raise ValueError(f"unknown entity type {entity_type!r}")
    with services.sessions() as session:
        row = tracked_row(session, portal_id, entity_type, entity_id)
        history = session.scalars(select(StatusHistory).where(
            StatusHistory.portal_id == portal_id, StatusHistory.entity_type == entity_type,
            StatusHistory.entity_id == entity_id).order_by(StatusHistory.id)).all()
        return {
            "entity_type": entity_type, "entity_id": entity_id,
            "row": {f: getattr(row, f) for f in ROW_FIELDS} if row is not None else None,
            "history": [{f: getattr(h, f) for f in HISTORY_FIELDS} for h in history],
        }
