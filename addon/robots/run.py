"""`Run`: one pass over one portal — its context and clock, the portal reads (`PortalReads`), and
the writes, messages and workflow replies a robot decides on, planned with unique keys and sent by
the runner after the commit."""
from __future__ import annotations

import datetime as dt
from typing import Any

from addon.engine import PortalContext, load_context
from addon.notifications import plan_message
from addon.outbox import plan_write
from addon.models import naive_utc
from addon.robots.reads import PortalReads
from addon.robots.texts import item_link, text

NOTIFY_KIND = "robot"
# Planned robot writes and messages wait in the shared Outbox / NotificationLog under their own
# status and are sent only by `send_robot_writes`, which claims rows (FOR UPDATE SKIP LOCKED on
# PostgreSQL): several workers firing timers at once never send the same write twice.
ROBOT_PENDING = "robot_pending"


class Run(PortalReads):
    """One pass over one portal: its context, a client, cached portal reads, planned writes."""

    def __init__(self, services, session, portal_id: int, now: dt.datetime, client=None):
        self.session = session
        self.now = naive_utc(now)  # naive UTC, as stored
        self.ctx: PortalContext = load_context(session, portal_id)
        self.local_now = self.ctx.local(self.now)
        super().__init__(services, portal_id, client)

    @property
    def language(self) -> str:
        return self.ctx.language or "ru"

    def t(self, key: str, **values) -> str:
        return text(self.language, key, **values)

    # -- planned writes ---------------------------------------------------------------------------
    def plan(self, key: str, method: str, params: dict) -> None:
        row = plan_write(self.session, self.portal_id, f"robot:{key}", method, params)
        if row is not None:
            row.status = ROBOT_PENDING

    def notify(self, key: str, user_id: int | None, message: str) -> None:
        if user_id:
            # Every part of a long message is claimed for the robot pass (notifications.message_parts).
            plan_message(self.session, self.portal_id, f"robot:{key}:{user_id}", int(user_id),
                         self.local_now.date(), NOTIFY_KIND, message, status=ROBOT_PENDING)

    def reply(self, key: str, event_token: str, return_values: dict[str, Any] | None, log_message: str) -> None:
        if event_token:
            self.plan(f"{key}:reply", "bizproc.event.send",
                      {"event_token": event_token, "return_values": return_values or {}, "log_message": log_message})

    def update_item(self, key: str, document_type: str, entity_id: int, fields: dict) -> None:
        self.plan(key, f"crm.{document_type}.update", {"id": entity_id, "fields": fields,
                                                       "params": {"REGISTER_SONET_EVENT": "Y"}})
        cached = self._items.get((document_type, entity_id))
        if cached is not None:
            cached.update(fields)

    def task(self, key: str, responsible: int | None, title: str, description: str, bindings: list[str],
             deadline: dt.datetime | None = None) -> None:
        if not responsible:
            return
        fields: dict[str, Any] = {"TITLE": title, "DESCRIPTION": description, "RESPONSIBLE_ID": int(responsible),
                                  "UF_CRM_TASK": bindings}
        if deadline is not None:
            fields["DEADLINE"] = deadline.isoformat()
        self.plan(key, "tasks.task.add", {"fields": fields})

    def title(self, document_type: str, entity_id: int, item: dict | None) -> str:
        return item_link(document_type, entity_id, (item or {}).get("TITLE"))
