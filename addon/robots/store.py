"""Storage helpers of the pipeline robots: per-portal state, records, timers, and the reports
the dashboard reads (close reasons, monthly ranking, absences). Helpers never commit."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from addon.models import RobotRecord, RobotState, RobotTimer, naive_utc, utcnow
from addon.robots.logic import RankRow, month_bounds, monthly_ranking, previous_month, ranking_weights

ABSENT_KEY = "absent"


def get_state(session: Session, portal_id: int, key: str, lock: bool = False) -> dict[str, Any]:
    """The state under `key`; with `lock`, the row is created if missing and held FOR UPDATE until
    the transaction ends, so two workers taking a pool's next turn take it one after the other."""
    query = select(RobotState).where(RobotState.portal_id == portal_id, RobotState.key == key) \
        .execution_options(populate_existing=True)
    if lock:
        _ensure_state_row(session, portal_id, key)
        query = query.with_for_update()
    row = session.scalar(query)
    return dict(row.value or {}) if row is not None else {}


def _ensure_state_row(session: Session, portal_id: int, key: str) -> None:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(RobotState).values(portal_id=portal_id, key=key, value={}, updated_at=utcnow())
                    .on_conflict_do_nothing())


def put_state(session: Session, portal_id: int, key: str, value: dict[str, Any]) -> None:
    row = session.get(RobotState, (portal_id, key))
    if row is None:
        session.add(RobotState(portal_id=portal_id, key=key, value=dict(value)))
    else:
        row.value = dict(value)  # a new dict, so the JSON column is seen as changed


# --- absences marked by the admin ------------------------------------------------------------------

def absent_users(session: Session, portal_id: int) -> set[int]:
    return {int(u) for u in get_state(session, portal_id, ABSENT_KEY).get("users", [])}


def mark_absent(session: Session, portal_id: int, user_id: int, absent: bool = True) -> None:
    """The admin marks a manager absent (vacation, sick leave): the distribution skips them and,
    on return, gives them their normal turn only."""
    users = absent_users(session, portal_id)
    (users.add if absent else users.discard)(int(user_id))
    put_state(session, portal_id, ABSENT_KEY, {"users": sorted(users)})


# --- records ---------------------------------------------------------------------------------------

def add_record(session: Session, portal_id: int, kind: str, document_id: str, at: dt.datetime,
               user_id: int | None = None, value: str | None = None) -> RobotRecord:
    row = RobotRecord(portal_id=portal_id, kind=kind, document_id=document_id, user_id=user_id,
                      value=value[:255] if value else value, at=naive_utc(at))
    session.add(row)
    return row


def has_record(session: Session, portal_id: int, kind: str, document_id: str, value: str | None = None) -> bool:
    query = select(RobotRecord.id).where(RobotRecord.portal_id == portal_id, RobotRecord.kind == kind,
                                         RobotRecord.document_id == document_id)
    if value is not None:
        query = query.where(RobotRecord.value == value)
    return session.scalar(query.limit(1)) is not None


def close_reason_counts(session: Session, portal_id: int, since: dt.datetime | None = None,
                        until: dt.datetime | None = None, document_type: str | None = None) -> dict[str, int]:
    """How often each close reason was given (the dashboard's "why we lose" table), most frequent first."""
    query = select(RobotRecord.value, RobotRecord.document_id).where(
        RobotRecord.portal_id == portal_id, RobotRecord.kind == "close_reason")
    if since is not None:
        query = query.where(RobotRecord.at >= naive_utc(since))
    if until is not None:
        query = query.where(RobotRecord.at < naive_utc(until))
    counts: Counter[str] = Counter()
    for value, document in session.execute(query):
        if document_type and not document.lower().startswith(document_type.lower() + "_"):
            continue
        counts[value or ""] += 1
    return dict(counts.most_common())


def _month_range_utc(month: str, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    start, end = month_bounds(month)
    return naive_utc(start.replace(tzinfo=tz)), naive_utc(end.replace(tzinfo=tz))


def ranking_report(session: Session, portal_id: int, month: str, tz: dt.tzinfo = dt.timezone.utc,
                   document_type: str | None = None) -> list[RankRow]:
    """The month's ranking: each manager's items given out by the distribution that month and how
    many of them reached the ranking stage (at any time since)."""
    start, end = _month_range_utc(month, tz)
    assigned_q = select(RobotRecord.user_id, RobotRecord.document_id).where(
        RobotRecord.portal_id == portal_id, RobotRecord.kind == "assigned",
        RobotRecord.at >= start, RobotRecord.at < end).order_by(RobotRecord.at, RobotRecord.id)
    # An item handed on (the take-in-work SLA) counts for the manager who finally had it.
    holder: dict[str, int] = {}
    for user, document in session.execute(assigned_q):
        if user is not None and (not document_type or document.lower().startswith(document_type.lower() + "_")):
            holder[document] = user
    assigned = [(u, d) for d, u in holder.items()]
    documents = set(holder)
    reached = set()
    if documents:
        reached_q = select(RobotRecord.document_id).where(
            RobotRecord.portal_id == portal_id, RobotRecord.kind == "reached",
            RobotRecord.document_id.in_(documents))
        reached = set(session.scalars(reached_q))
    return monthly_ranking(assigned, reached)


def ranking_weights_for(session: Session, portal_id: int, month: str, tz: dt.tzinfo,
                        document_type: str) -> dict[int, float]:
    """This month's distribution weights, from last month's ranking; computed once and kept, so
    the shares stay the same all month."""
    key = f"ranking:{document_type}:{month}"
    stored = get_state(session, portal_id, key)
    if "weights" in stored:
        return {int(k): float(v) for k, v in stored["weights"].items()}
    config = get_state(session, portal_id, f"ranking_config:{document_type}")
    share = float(config.get("share", 0.5))
    rows = ranking_report(session, portal_id, previous_month(month), tz, document_type)
    weights = ranking_weights(rows, weak_share=share)
    put_state(session, portal_id, key, {"weights": {str(k): v for k, v in weights.items()},
                                        "from": previous_month(month), "share": share})
    return weights


# --- timers ----------------------------------------------------------------------------------------

def upsert_timer(session: Session, portal_id: int, robot: str, key: str, document_id: str,
                 due_at: dt.datetime, state: dict[str, Any]) -> RobotTimer:
    """Create the timer, or re-plan the existing one with this key (a robot run again on the item)."""
    row = session.scalar(select(RobotTimer).where(RobotTimer.portal_id == portal_id, RobotTimer.key == key))
    if row is None:
        row = RobotTimer(portal_id=portal_id, robot=robot, key=key[:255], document_id=document_id,
                         due_at=naive_utc(due_at), state=dict(state), status="waiting")
        session.add(row)
    else:
        row.robot, row.document_id, row.due_at = robot, document_id, naive_utc(due_at)
        row.state, row.status, row.fired_at = dict(state), "waiting", None
    return row


def cancel_timers(session: Session, portal_id: int, document_id: str, robot: str, keep_key: str | None = None) -> int:
    rows = session.scalars(select(RobotTimer).where(
        RobotTimer.portal_id == portal_id, RobotTimer.document_id == document_id, RobotTimer.robot == robot,
        RobotTimer.status == "waiting")).all()
    n = 0
    for row in rows:
        if row.key != keep_key:
            row.status = "cancelled"
            n += 1
    return n
