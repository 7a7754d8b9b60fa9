"""Applying the pure status rules to storage: the portal's context (options, time zone, field
items), the service-table row <-> rules.Entity mapping, history lines, and the two exactly-once
queues every job writes through (Outbox for portal writes, NotificationLog for messages).

Helpers here never commit: the job at the edge owns the session. Sending happens only after
the planned rows are committed, and each row is marked as soon as its batch is answered.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from addon import rules
from addon.bitrix.errors import BLOCKED, PAYMENT, MethodParked, is_permanent
from addon.models import (
    NotificationLog,
    Outbox,
    Portal,
    PortalSettings,
    StatusHistory,
    TrackedEntity,
    utcnow,
)
from addon.options import Options, parse_time_zone
from addon.rules.ladder import reason_code
from addon.rules.messages import COMMENT_LIMIT, MESSAGE_LIMIT, POST_LIMIT, cut_message, split_message

STATUS_FIELD = "UF_CRM_NEZABYT_STATUS"
REASON_FIELD = "UF_CRM_NEZABYT_REASON"
SEND_CHUNK = 50


@dataclass
class PortalContext:
    """What a job needs to know about one portal, read once at its start."""

    portal_id: int
    opts: Options
    tz: dt.tzinfo
    field_items: dict[str, Any] = field(default_factory=dict)
    settings_version: int = 1
    dated_version: int | None = None  # see PortalSettings.dated_version
    language: str = "ru"

    # --- time -----------------------------------------------------------------------------
    def local(self, moment: dt.datetime) -> dt.datetime:
        """An instant in the portal's time zone (naive instants are taken as UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.astimezone(self.tz)

    def today(self, now: dt.datetime) -> dt.date:
        return self.local(now).date()

    def day_of(self, value: Any) -> dt.date | None:
        """The portal-time-zone day of a Bitrix24 date-time ("2026-11-22T12:00:00+03:00")."""
        moment = parse_portal_time(value, self.tz)
        return moment.astimezone(self.tz).date() if moment is not None else None

    # --- the enumeration fields -----------------------------------------------------------
    def item_id(self, entity_type: str, code: str | None) -> str:
        """The list item ID to write for a status code ("" clears the field)."""
        if code is None:
            return ""
        items = self.field_items.get(entity_type) or {}
        if code not in items:
            raise KeyError(f"no list item for status {code} on {entity_type}; sync the status field")
        return str(items[code])

    def code_of(self, entity_type: str, value: Any) -> str | None:
        """The status code a portal field value (a list item ID) stands for; an item we do not
        know comes back as "?<id>" so the rules see an unknown status and revert it."""
        value = _first(value)
        if value in (None, "", False, "0", 0):
            return None
        value = str(value)
        for code, item in (self.field_items.get(entity_type) or {}).items():
            if str(item) == value:
                return code
        return f"?{value}"

    def reason_of(self, entity_type: str, value: Any) -> str | None:
        """The reason text a reason-field value (a list item ID) stands for. The list items are
        keyed by the reason's code (rules.ladder.reason_code), so map back through the options."""
        value = _first(value)
        if value in (None, "", False, "0", 0):
            return None
        texts = {reason_code(r): r for s in self.opts.statuses for r in s.reasons}
        items = self.field_items.get(f"reason_{entity_type}") or {}
        for key, item in items.items():
            if str(item) == str(value):
                return texts.get(key, key)
        return str(value)


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def parse_portal_time(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    if value in (None, "", False):
        return None
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def load_context(session: Session, portal_id: int) -> PortalContext:
    portal = session.get(Portal, portal_id)
    if portal is None:
        raise LookupError(f"no portal {portal_id}")
    row = session.get(PortalSettings, portal_id)
    data = dict(row.data or {}) if row is not None else {}
    # The portal's own zone (set on install) unless the admin chose one in the settings.
    if not data.get("time_zone") and portal.time_zone:
        data["time_zone"] = portal.time_zone
    opts = Options.from_dict(data)
    tz = parse_time_zone(opts.time_zone) or dt.timezone.utc
    return PortalContext(portal_id=portal_id, opts=opts, tz=tz,
                         field_items=dict(row.field_items or {}) if row is not None else {},
                         settings_version=row.version if row is not None else 1,
                         dated_version=row.dated_version if row is not None else None,
                         language=opts.language)


def find_portal(session: Session, member_or_domain: str) -> Portal | None:
    """`--portal` takes a member_id or a domain (or the numeric row id)."""
    text = str(member_or_domain).strip()
    portal = session.scalar(select(Portal).where(Portal.member_id == text))
    if portal is None:
        portal = session.scalar(select(Portal).where(Portal.domain == text).order_by(Portal.id.desc()))
    if portal is None and text.isdigit():
        portal = session.get(Portal, int(text))
    return portal


# --- the service table ----------------------------------------------------------------------------

def entity_of(row: TrackedEntity | None) -> rules.Entity:
    if row is None:
        return rules.Entity(status=None, status_set_on=None)
    return rules.entity_of(row)


def store(row: TrackedEntity, e: rules.Entity, opts: Options) -> None:
    """Copy the rules' view back to the row and re-date it (due/warn feed the range scans)."""
    for name, value in rules.row_values(opts, e).items():
        setattr(row, name, value)


# The causes a person is behind (a manager's edit, an admin's load or undo): their history lines name them.
BY_USER_CAUSES = ("manager", "import", "undo")


def history_values(row: TrackedEntity, steps: Iterable[rules.Step], *, by_user_id: int | None = None,
                   note: str | None = None) -> list[dict[str, Any]]:
    """The StatusHistory rows of the row's steps, as values (for one INSERT of a whole chunk)."""
    return [{"portal_id": row.portal_id, "entity_type": row.entity_type, "entity_id": row.entity_id,
             "from_status": step.from_status, "to_status": step.to_status, "changed_on": step.on,
             "cause": step.cause, "by_user_id": by_user_id if step.cause in BY_USER_CAUSES else None,
             "assigned_by_id": row.assigned_by_id, "note": note, "recorded_at": utcnow()}
            for step in steps]


def add_history(session: Session, row: TrackedEntity, steps: Iterable[rules.Step], *,
                by_user_id: int | None = None, note: str | None = None) -> list[StatusHistory]:
    lines = [StatusHistory(**values) for values in history_values(row, steps, by_user_id=by_user_id, note=note)]
    session.add_all(lines)
    return lines


def write_back(session: Session, model, rows: list, names: Iterable[str]) -> None:
    """Write the named columns of loaded rows back in few statements, and take the rows out of the
    session so no per-object flush repeats it (a unit-of-work flush of a chunk's objects costs more
    CPU than the UPDATE). Rows that end alike (a batch's "sent" marks) share one UPDATE ... WHERE
    id IN; rows that differ go in one executemany UPDATE by id. The named columns must be all the
    caller changed on them."""
    if not rows:
        return
    names = tuple(names)
    table = model.__table__
    alike: dict[tuple, list[int]] = {}
    for r in rows:
        alike.setdefault(tuple(getattr(r, name) for name in names), []).append(r.id)
    for r in rows:
        session.expunge(r)
    if len(alike) * 4 <= len(rows):  # few endings (a quarter of the rows or less): one UPDATE each
        for values, ids in alike.items():
            session.execute(table.update().where(table.c.id.in_(ids)).values(dict(zip(names, values))))
        return
    statement = table.update().where(table.c.id == bindparam("row_id")).values(
        {name: bindparam(name) for name in names})
    session.execute(statement, [{"row_id": row_id, **dict(zip(names, values))}
                                for values, ids in alike.items() for row_id in ids])


def insert_rows(session: Session, model, values: list[dict[str, Any]]) -> None:
    """Store many rows of `model` in one executemany INSERT (Core: no ORM objects to flush). The
    values carry every column the table's Python defaults would fill."""
    if values:
        session.execute(model.__table__.insert(), values)


def tracked_row(session: Session, portal_id: int, entity_type: str, entity_id: int) -> TrackedEntity | None:
    return session.scalar(select(TrackedEntity).where(TrackedEntity.portal_id == portal_id,
                                                      TrackedEntity.entity_type == entity_type,
                                                      TrackedEntity.entity_id == entity_id))


def entity_title(entity_type: str, fields: dict) -> str:
    if entity_type == "company":
        return str(fields.get("TITLE") or f"#{fields.get('ID')}")[:255]
    name = " ".join(str(fields.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    return (name or str(fields.get("TITLE") or f"#{fields.get('ID')}"))[:255]


def int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "", False) else None
    except (TypeError, ValueError):
        return None


# --- Outbox: planned portal writes ------------------------------------------------------------------

def status_update(ctx: PortalContext, entity_type: str, entity_id: int, code: str | None,
                  extra: dict | None = None) -> tuple[str, dict]:
    """The crm.<type>.update that writes a status (and, on loss, OPENED/ASSIGNED_BY_ID)."""
    fields = {STATUS_FIELD: ctx.item_id(entity_type, code)}
    fields.update(extra or {})
    return f"crm.{entity_type}.update", {"id": entity_id, "fields": fields,
                                         "params": {"REGISTER_SONET_EVENT": "N"}}


def write_values(portal_id: int, key: str, method: str, params: dict,
                 job_run_id: int | None = None) -> dict[str, Any]:
    """One pending Outbox row's values."""
    if method == "crm.timeline.comment.add" and "COMMENT" in (params.get("fields") or {}):
        # One comment tells one change: cut, not split (the stored text is the one sent, which
        # _confirm_comments compares against the portal's).
        params = {**params, "fields": {**params["fields"],
                                       "COMMENT": cut_message(str(params["fields"]["COMMENT"]), COMMENT_LIMIT)}}
    return {"portal_id": portal_id, "key": key[:255], "method": method, "params": params, "status": "pending",
            "job_run_id": job_run_id, "created_at": utcnow(), "attempts": 0}


def plan_write(session: Session, portal_id: int, key: str, method: str, params: dict,
               job_run_id: int | None = None, check: bool = True) -> Outbox | None:
    """Add a planned write unless one with this key exists (a rerun plans nothing twice).
    `check=False` when the caller plans in one transaction that cannot have run before."""
    if check and session.scalar(select(Outbox.id).where(Outbox.portal_id == portal_id,
                                                        Outbox.key == key)) is not None:
        return None
    row = Outbox(**write_values(portal_id, key, method, params, job_run_id))
    session.add(row)
    return row


def status_write_values(ctx: PortalContext, row: TrackedEntity, key: str, extra: dict | None = None,
                        job_run_id: int | None = None) -> dict[str, Any]:
    """The Outbox values that write the row's status to the portal; the row remembers it, to know
    its echo. plan_status_write adds one; a chunk planned in one transaction inserts them together."""
    method, params = status_update(ctx, row.entity_type, row.entity_id, row.status, extra)
    row.written_status = row.status
    row.written_at = utcnow()
    return write_values(ctx.portal_id, key, method, params, job_run_id)


def plan_status_write(session: Session, ctx: PortalContext, row: TrackedEntity, key: str,
                      extra: dict | None = None, job_run_id: int | None = None, check: bool = True) -> Outbox | None:
    """Plan writing the row's status to the portal and remember it, to know its echo."""
    values = status_write_values(ctx, row, key, extra, job_run_id)
    return plan_write(session, ctx.portal_id, key, values["method"], values["params"], job_run_id, check)


def send_outbox(services, client, portal_id: int, limit: int | None = None) -> int:
    """Send pending planned writes, 50 a batch. Each batch is marked "sending" (committed) before
    it goes and "sent" as soon as it is answered; a batch found still "sending" was interrupted
    (the worker died): its status writes are checked against the portal first, so a write that
    did arrive is not made twice. A write the portal refuses for good (the entity is gone) is
    marked failed; a transient failure stays pending for the next pass."""
    sent = 0
    while True:
        with services.sessions() as session:
            rows = session.scalars(select(Outbox).where(Outbox.portal_id == portal_id,
                                                        Outbox.status.in_(("pending", "sending")))
                                   .order_by(Outbox.id).limit(SEND_CHUNK)).all()
            if not rows:
                return sent
            sent += _confirm_interrupted(client, [r for r in rows if r.status == "sending"])
            rows = [r for r in rows if r.status != "sent"]
            if rows:
                # One UPDATE for the batch; the loaded rows take the new status as their committed value.
                session.execute(Outbox.__table__.update().where(Outbox.__table__.c.id.in_([r.id for r in rows]))
                                .values(status="sending"))
                for r in rows:
                    set_committed_value(r, "status", "sending")
            session.commit()
            answer = client.batch({str(r.id): (r.method, r.params) for r in rows}) if rows else None
            transient = 0
            if rows:
                done, transient = store_answers(session, Outbox, rows, answer, retry_status="pending",
                                                max_attempts=services.settings.send_attempts)
                sent += done
            session.commit()
        if transient:
            return sent  # the portal is struggling: leave the rest for the next pass
        if limit is not None and sent >= limit:
            return sent


def _confirm_interrupted(client, rows: list[Outbox]) -> int:
    """Mark as sent the interrupted writes the portal already shows: status writes by the field's
    value, timeline comments by their text among the entity's newest comments."""
    confirmed = _confirm_comments(client, [r for r in rows if r.method == "crm.timeline.comment.add"])
    by_method: dict[str, list[Outbox]] = {}
    for r in rows:
        fields = (r.params or {}).get("fields") or {}
        # The status travels in the same update as OPENED/ASSIGNED_BY_ID: if it arrived, all did.
        if r.method.endswith(".update") and STATUS_FIELD in fields:
            by_method.setdefault(r.method[:-len(".update")] + ".get", []).append(r)
    for method, its in by_method.items():
        got = client.get_many(method, [r.params["id"] for r in its])
        for r in its:
            current = got.get(int(r.params["id"]))
            if isinstance(current, dict) and str(_first(current.get(STATUS_FIELD)) or "") == str(
                    r.params["fields"][STATUS_FIELD] or ""):
                r.status, r.sent_at, r.error = "sent", utcnow(), "confirmed after an interruption"
                confirmed += 1
    return confirmed


def _confirm_comments(client, rows: list[Outbox]) -> int:
    """An interrupted comment that is among its entity's 50 newest, word for word, arrived (each
    comment's text names its change and day, so it is unique on its entity)."""
    if not rows:
        return 0
    answer = client.batch({str(r.id): ("crm.timeline.comment.list", {
        "filter": {"ENTITY_ID": r.params["fields"]["ENTITY_ID"], "ENTITY_TYPE": r.params["fields"]["ENTITY_TYPE"]},
        "select": ["ID", "COMMENT"], "order": {"ID": "DESC"}}) for r in rows})
    confirmed = 0
    for r in rows:
        found = answer.results.get(str(r.id))
        texts = {str(c.get("COMMENT")) for c in found if isinstance(c, dict)} if isinstance(found, list) else set()
        if r.params["fields"]["COMMENT"] in texts:
            r.status, r.sent_at, r.error = "sent", utcnow(), "confirmed after an interruption"
            confirmed += 1
    return confirmed


def _counts_as_attempt(answer, key: str, error) -> bool:
    """Did this row itself fail? Only when the portal ran the batch and refused this command, or
    answered others of the same batch. A batch refused whole (the rate limit, a 5xx, a timeout)
    or a portal that is paused (blocked, unpaid, the method parked) says nothing about the row."""
    if isinstance(error, MethodParked) or getattr(error, "kind", None) in (BLOCKED, PAYMENT):
        return False
    return key in getattr(answer, "own_errors", ()) or bool(answer.results)


def mark_answers(rows, answer, *, max_attempts: int, retry_status: str | None = None) -> tuple[int, int]:
    """Mark each planned row by its command's answer in a batch (keyed by row id): sent, failed for
    good, or left for a retry (status `retry_status`, or unchanged). A row the portal refuses on
    its own for a passing reason `max_attempts` times is marked failed with its last error, so it
    never holds up the portal's queue. Returns (sent, transient)."""
    sent = transient = 0
    now = utcnow()
    for r in rows:
        error = answer.errors.get(str(r.id))
        if error is not None and not is_permanent(error) and _counts_as_attempt(answer, str(r.id), error):
            r.attempts = (r.attempts or 0) + 1
            if r.attempts >= max_attempts:
                r.status, r.error = "failed", f"gave up after {r.attempts} attempts: {error}"[:2000]
                continue
        if error is None:
            r.status, r.sent_at, r.error = "sent", now, None
            sent += 1
        elif is_permanent(error):
            r.status, r.error = "failed", str(error)[:2000]
        elif getattr(error, "uncertain", False) and retry_status is not None:
            # A write that timed out or got a 5xx may have arrived: left "sending", the next pass
            # checks the portal before sending it again (as after an interrupted batch).
            r.status, r.error = "sending", str(error)[:2000]
            transient += 1
        else:
            if retry_status is not None:
                r.status = retry_status
            r.error = str(error)[:2000]
            transient += 1
    return sent, transient


# What mark_answers changes on a row.
_MARKS = ("status", "sent_at", "error", "attempts")


def store_answers(session: Session, model, rows, answer, *, max_attempts: int,
                  retry_status: str | None = None) -> tuple[int, int]:
    """mark_answers, then the batch's marks written in one executemany UPDATE (write_back).
    Returns (sent, transient)."""
    counts = mark_answers(rows, answer, max_attempts=max_attempts, retry_status=retry_status)
    write_back(session, model, rows, _MARKS)
    return counts


# --- NotificationLog: messages exactly once -----------------------------------------------------------

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
            rows = session.scalars(select(NotificationLog).where(NotificationLog.portal_id == portal_id,
                                                                 NotificationLog.status == "pending")
                                   .order_by(NotificationLog.id).limit(SEND_CHUNK)).all()
            if not rows:
                return sent
            answer = client.batch({str(r.id): notification_command(r, feed_title) for r in rows})
            done, transient = store_answers(session, NotificationLog, rows, answer,
                                            max_attempts=services.settings.send_attempts)
            sent += done
            session.commit()
        if transient:
            return sent


def flush(services, client, portal_id: int, feed_title: str | None = None) -> tuple[int, int]:
    """Send whatever is planned and not yet sent: writes first, then messages."""
    return send_outbox(services, client, portal_id), send_notifications(services, client, portal_id, feed_title)
