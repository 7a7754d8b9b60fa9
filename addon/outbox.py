"""The Outbox: portal writes planned exactly once by key, then sent 50 a batch (an interrupted batch
confirmed against the portal first), and the marking of any planned row by its command's answer.

Planning never commits (the job at the edge owns the session); sending starts only after the plan is
committed, and send_outbox commits each batch's marks as soon as it is answered.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from addon.bitrix.errors import BLOCKED, PAYMENT, MethodParked, is_permanent
from addon.bulkwrite import among, insert_rows, write_back
from addon.engine import STATUS_FIELD, PortalContext, first_value
from addon.models import Outbox, TrackedEntity, utcnow
from addon.rules.messages import COMMENT_LIMIT, cut_message

SEND_CHUNK = 50
WAITING = ("pending", "sending")  # the statuses of a planned write not yet answered


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


class PlannedWrite:
    """A write just inserted as "sending" by insert_sending: what sending and marking it need,
    without loading the Outbox row back as an ORM object."""

    __slots__ = ("id", "method", "params", "status", "sent_at", "error", "attempts")

    def __init__(self, row_id: int, method: str, params: dict) -> None:
        self.id, self.method, self.params = row_id, method, params
        self.status, self.sent_at, self.error, self.attempts = "sending", None, None, 0


def nothing_waiting(session: Session, portal_id: int) -> bool:
    """No planned write of the portal is pending or being sent (one indexed probe)."""
    return session.scalar(select(Outbox.id).where(Outbox.portal_id == portal_id,
                                                  Outbox.status.in_(WAITING)).limit(1)) is None


def insert_sending(session: Session, values: list[dict[str, Any]]) -> list[PlannedWrite]:
    """Insert planned writes already marked "sending", in one statement, and return them for
    send_planned. Only for a caller whose portal has nothing else waiting (nothing_waiting, under
    the portal's lease): the writes are then the next to go, in their order, and a crash before
    they are answered leaves them "sending", to be checked against the portal like any
    interrupted batch."""
    if not values:
        return []
    table = Outbox.__table__
    # Inserted, then one short read back, not INSERT ... RETURNING: psycopg would parse the
    # many-row statement that RETURNING makes on every run.
    insert_rows(session, Outbox, [{**v, "status": "sending"} for v in values])
    by_key = {v["key"]: v for v in values}
    ids = session.execute(select(table.c.id, table.c.key).where(
        table.c.portal_id == values[0]["portal_id"], table.c.status == "sending",
        table.c.job_run_id == values[0]["job_run_id"]).order_by(table.c.id)).all()
    return [PlannedWrite(row_id, by_key[key]["method"], by_key[key]["params"]) for row_id, key in ids if key in by_key]


def send_planned(services, client, planned: list[PlannedWrite]) -> tuple[int, int]:
    """Send writes insert_sending stored (committed), SEND_CHUNK a batch, each batch's marks
    committed as soon as it is answered. Stops at a transient failure: the batches after it were
    never sent and go back to plain pending (a write of that batch that may have arrived stays
    "sending", for send_outbox to check first). Returns (sent, transient)."""
    sent = 0
    for start in range(0, len(planned), SEND_CHUNK):
        rows = planned[start:start + SEND_CHUNK]
        answer = client.batch({str(r.id): (r.method, r.params) for r in rows})
        with services.sessions() as session:
            done, transient = store_answers(session, Outbox, rows, answer, retry_status="pending",
                                            max_attempts=services.settings.send_attempts)
            session.commit()
        sent += done
        if transient:
            unsent = [r.id for r in planned[start + SEND_CHUNK:]]
            if unsent:  # never sent: plain pending, no check against the portal needed
                with services.sessions() as session:
                    table = Outbox.__table__
                    session.execute(table.update().where(among(session, table.c.id, unsent)).values(status="pending"))
                    session.commit()
            return sent, transient
    return sent, 0


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
                                                        Outbox.status.in_(WAITING))
                                   .order_by(Outbox.id).limit(SEND_CHUNK)).all()
            if not rows:
                return sent
            found = len(rows)
            sent += _confirm_interrupted(client, [r for r in rows if r.status == "sending"])
            rows = [r for r in rows if r.status != "sent"]
            if rows:
                # One UPDATE for the batch; the loaded rows take the new status as their committed value.
                table = Outbox.__table__
                session.execute(table.update().where(among(session, table.c.id, [r.id for r in rows]))
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
        if found < SEND_CHUNK:
            return sent  # a short batch was the last one: no query to find nothing more


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
            if isinstance(current, dict) and str(first_value(current.get(STATUS_FIELD)) or "") == str(
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
