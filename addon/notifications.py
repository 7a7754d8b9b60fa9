"""The NotificationLog: messages recorded before they are sent, exactly once per recipient and day,
split to what the portal takes, sent 50 a batch (a manager's notification or a live-feed post)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from addon import outbox
from addon.models import NotificationLog
from addon.rules.messages import MESSAGE_LIMIT, POST_LIMIT, split_message

FEED_KIND = "feed"


def message_parts(key: str, kind: str, message: str) -> list[tuple[str, str]]:
    """(key, text) of each part a message is sent in, each within what the portal takes
    (rules.messages): a message that fits is one part under its own key; a longer one is split on
    line boundaries, part k > 1 keyed `<key>:k`, so each part is its own exactly-once row and its
    own notification TAG (a twin TAG would replace the part before it)."""
    if kind == FEED_KIND:
        texts = split_message(message, POST_LIMIT, head=False)
    else:
        texts = split_message(message, MESSAGE_LIMIT)
    key = key[:255]
    return [(key if k == 1 else f"{key[:250]}:{k}", text) for k, text in enumerate(texts, 1)]


def plan_message(session: Session, portal_id: int, key: str, recipient_id: int, day: dt.date, kind: str,
                 message: str, check: bool = True, status: str = "pending") -> NotificationLog | None:
    """Record a message before it is sent; its key makes it exactly-once per recipient and day.
    A message too long for the portal is recorded as several parts (message_parts), all in this
    transaction. Returns the first part's row, or None when the message was recorded before."""
    parts = message_parts(key, kind, message)
    if check:
        known = set(session.scalars(select(NotificationLog.key).where(
            NotificationLog.portal_id == portal_id, NotificationLog.key.in_([k for k, _ in parts]))))
        if parts[0][0] in known:
            return None
        parts = [(k, text) for k, text in parts if k not in known]
    rows = [NotificationLog(portal_id=portal_id, key=k, recipient_id=recipient_id, day=day, kind=kind,
                            message=text, status=status) for k, text in parts]
    session.add_all(rows)
    return rows[0]


def notification_command(row: NotificationLog, title: str | None = None) -> tuple[str, dict]:
    if row.kind == FEED_KIND:
        # A live-feed post to the manager alone.
        return "log.blogpost.add", {"POST_TITLE": title or "", "POST_MESSAGE": row.message,
                                    "DEST": [f"U{row.recipient_id}"]}
    # TAG = our key: were a message ever sent again after a crash, Bitrix24 replaces it, so the
    # recipient still sees it once. The parts of a long message have keys of their own
    # (message_parts), so one part never replaces another.
    return "im.notify.system.add", {"USER_ID": row.recipient_id, "MESSAGE": row.message, "TAG": row.key}


def send_notifications(services, client, portal_id: int, feed_title: str | None = None) -> int:
    sent = 0
    while True:
        with services.sessions() as session:
            # outbox.SEND_CHUNK: one batch size for both queues.
            rows = session.scalars(select(NotificationLog).where(NotificationLog.portal_id == portal_id,
                                                                 NotificationLog.status == "pending")
                                   .order_by(NotificationLog.id).limit(outbox.SEND_CHUNK)).all()
            if not rows:
                return sent
            answer = client.batch({str(r.id): notification_command(r, feed_title) for r in rows})
            done, transient = outbox.store_answers(session, NotificationLog, rows, answer,
                                                   max_attempts=services.settings.send_attempts)
            sent += done
            session.commit()
        if transient or len(rows) < outbox.SEND_CHUNK:
            return sent  # the portal is struggling, or a short batch was the last one


def flush(services, client, portal_id: int, feed_title: str | None = None) -> tuple[int, int]:
    """Send whatever is planned and not yet sent: writes first, then messages."""
    return outbox.send_outbox(services, client, portal_id), send_notifications(services, client, portal_id, feed_title)
