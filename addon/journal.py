"""The journal: every daily run and bulk load as one entry (its JobRun) with the changes it made to
clients (JournalChange: status and responsible before and after), what the «Журнал» tab shows,
and queueing an undo of an entry's status changes and transfers (run by worker.undo).

Helpers here never commit: the caller owns the session."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.orm import Session

from addon.bulkwrite import insert_rows
from addon.models import ImportJob, JobRun, JournalChange, TrackedEntity, utcnow

# A run's changes can be taken back for this long after it finished.
UNDO_DAYS = 7
# The kinds of JobRun that are journal entries.
ENTRY_KINDS = ("daily", "import")
UNDO_KIND = "undo"
# undo_state of a change: sent to the portal and not yet confirmed / put back / left as it is.
SENDING, UNDONE, REFUSED, FAILED = "sending", "undone", "refused", "failed"
# Why a change is not taken back (JournalChange.undo_note of a refused one).
CHANGED_STATUS = "status_changed"
CHANGED_ASSIGNEE = "assignee_changed"
GONE = "gone"
UNTRACKED = "untracked"
DEPARTED = "departed"
STATUS_REMOVED = "status_removed"


class UndoRefused(Exception):
    """The entry cannot be undone; `reason` is one of not_found, not_finished, too_old, nothing, done."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- recording, by the daily run and the bulk load ------------------------------------------------------
def change_values(portal_id: int, job_run_id: int, entity_type: str, entity_id: int, *, old_status: str | None,
                  old_status_set_on: dt.date | None, old_previous_status: str | None,
                  old_assigned_by_id: int | None, new_status: str | None,
                  new_assigned_by_id: int | None) -> dict[str, Any]:
    """One JournalChange's values: the client as it was and as the entry left it."""
    return {"portal_id": portal_id, "job_run_id": job_run_id, "entity_type": entity_type,
            "entity_id": entity_id, "old_status": old_status, "new_status": new_status,
            "old_status_set_on": old_status_set_on, "old_previous_status": old_previous_status,
            "old_assigned_by_id": old_assigned_by_id, "new_assigned_by_id": new_assigned_by_id}


def row_change(portal_id: int, job_run_id: int, row: TrackedEntity, *, old_status: str | None,
               old_status_set_on: dt.date | None, old_previous_status: str | None,
               old_assigned_by_id: int | None) -> dict[str, Any]:
    """change_values for a tracked row the entry has just changed (its new values are the row's)."""
    return change_values(portal_id, job_run_id, row.entity_type, row.entity_id, old_status=old_status,
                         old_status_set_on=old_status_set_on, old_previous_status=old_previous_status,
                         old_assigned_by_id=old_assigned_by_id, new_status=row.status,
                         new_assigned_by_id=row.assigned_by_id)


def record_changes(session: Session, values: list[dict[str, Any]]) -> None:
    """Store a chunk's changes in one executemany INSERT (an entry may hold a whole base)."""
    insert_rows(session, JournalChange, values)


def note_transfer(session: Session, job_run_id: int, row: TrackedEntity, old_assigned_by_id: int | None) -> None:
    """The run handed `row` over (its assigned_by_id is the new responsible now): on the run's change
    of that client if it has one, else as a change of the responsible alone."""
    done = session.execute(update(JournalChange).where(
        JournalChange.job_run_id == job_run_id, JournalChange.entity_type == row.entity_type,
        JournalChange.entity_id == row.entity_id).values(new_assigned_by_id=row.assigned_by_id)
        .execution_options(synchronize_session=False))
    if not done.rowcount:
        record_changes(session, [row_change(row.portal_id, job_run_id, row, old_status=row.status,
                                            old_status_set_on=row.status_set_on,
                                            old_previous_status=row.previous_status,
                                            old_assigned_by_id=old_assigned_by_id)])


# --- reading, for the tab ---------------------------------------------------------------------------------
@dataclass
class ManagerLine:
    manager_id: int | None
    status_changes: int = 0
    transfers: int = 0


@dataclass
class Entry:
    run_id: int
    kind: str  # daily | import
    at: dt.datetime | None  # when it finished (naive UTC), else when it started
    day: dt.date | None  # a daily run's portal day
    filename: str | None  # a bulk load's file
    status: str  # the JobRun's
    messages: int = 0
    status_changes: int = 0
    transfers: int = 0
    clients: int = 0
    by_manager: list[ManagerLine] = field(default_factory=list)
    undo: dict[str, Any] | None = None  # the undo's run id, status, and counts by undo_state
    undo_until: dt.datetime | None = None

    def can_undo(self, now: dt.datetime) -> bool:
        return (self.status == "done" and self.clients > 0 and self.undo_until is not None
                and now <= self.undo_until and (self.undo is None or self.undo["status"] == "failed"))


def undo_until(run: JobRun) -> dt.datetime | None:
    moment = run.finished_at or run.started_at or run.created_at
    return moment + dt.timedelta(days=UNDO_DAYS) if moment is not None else None


def _status_changed():
    return case((JournalChange.old_status.is_distinct_from(JournalChange.new_status), 1), else_=0)


def _handed_over():
    return case((JournalChange.old_assigned_by_id.is_distinct_from(JournalChange.new_assigned_by_id), 1), else_=0)


def entries(session: Session, portal_id: int, limit: int = 30) -> list[Entry]:
    """The newest `limit` daily runs and bulk loads of the portal, with their counts."""
    return _entries(session, portal_id, list(session.scalars(
        select(JobRun).where(JobRun.portal_id == portal_id, JobRun.kind.in_(ENTRY_KINDS))
        .order_by(JobRun.id.desc()).limit(limit))))


def entry(session: Session, portal_id: int, run_id: int) -> Entry | None:
    """One entry with its counts (the drill-down's head), however old; None if it is not one."""
    run = entry_run(session, portal_id, run_id)
    return _entries(session, portal_id, [run])[0] if run is not None else None


def _entries(session: Session, portal_id: int, runs: list[JobRun]) -> list[Entry]:
    ids = [r.id for r in runs]
    out: dict[int, Entry] = {}
    files = {}
    import_ids = [int(r.params.get("import_job_id")) for r in runs if r.kind == "import"
                  and str((r.params or {}).get("import_job_id", "")).isdigit()]
    if import_ids:
        files = dict(session.execute(select(ImportJob.id, ImportJob.filename).where(ImportJob.id.in_(import_ids))).all())
    for r in runs:
        params, summary = r.params or {}, r.summary or {}
        day = dt.date.fromisoformat(params["day"]) if r.kind == "daily" and params.get("day") else None
        job_id = params.get("import_job_id")
        out[r.id] = Entry(run_id=r.id, kind=r.kind, at=r.finished_at or r.started_at or r.created_at, day=day,
                          filename=files.get(int(job_id)) if str(job_id or "").isdigit() else None, status=r.status,
                          messages=int(summary.get("messages", 0) or 0) if r.kind == "daily" else 0,
                          undo_until=undo_until(r))
    if not ids:
        return []
    managers: dict[int, dict[int | None, ManagerLine]] = defaultdict(dict)
    for run_id, manager, n, changes, transfers in session.execute(
            select(JournalChange.job_run_id, JournalChange.old_assigned_by_id, func.count(),
                   func.sum(_status_changed()), func.sum(_handed_over()))
            .where(JournalChange.job_run_id.in_(ids))
            .group_by(JournalChange.job_run_id, JournalChange.old_assigned_by_id)):
        e = out[run_id]
        e.clients += n
        e.status_changes += int(changes or 0)
        e.transfers += int(transfers or 0)
        managers[run_id][manager] = ManagerLine(manager, int(changes or 0), int(transfers or 0))
    for run_id, lines in managers.items():
        out[run_id].by_manager = sorted(lines.values(), key=lambda m: (-(m.status_changes + m.transfers),
                                                                         m.manager_id or 0))
    undos = {u.params.get("entry_id"): u for u in session.scalars(
        select(JobRun).where(JobRun.portal_id == portal_id, JobRun.kind == UNDO_KIND,
                             JobRun.key.in_([undo_key(i) for i in ids])))}
    if undos:
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        for run_id, state, n in session.execute(
                select(JournalChange.job_run_id, JournalChange.undo_state, func.count())
                .where(JournalChange.job_run_id.in_(list(undos)), JournalChange.undo_state.is_not(None))
                .group_by(JournalChange.job_run_id, JournalChange.undo_state)):
            counts[run_id][state] = n
        for entry_id, u in undos.items():
            if entry_id in out:
                out[entry_id].undo = {"run_id": u.id, "status": u.status, "at": u.finished_at or u.created_at,
                                      "error": u.error, **{s: counts[entry_id].get(s, 0)
                                                           for s in (UNDONE, REFUSED, FAILED, SENDING)}}
    return [out[i] for i in ids]


def entry_changes(session: Session, portal_id: int, run_id: int, *, manager_id: int | None = None,
                  state: str | None = None, limit: int = 300) -> tuple[list[dict[str, Any]], int]:
    """A page of one entry's changes (the drill-down), with each client's title, and how many match."""
    where = [JournalChange.portal_id == portal_id, JournalChange.job_run_id == run_id]
    if manager_id is not None:  # 0: the clients nobody was responsible for
        where.append(JournalChange.old_assigned_by_id == manager_id if manager_id
                     else JournalChange.old_assigned_by_id.is_(None))
    if state:
        where.append(JournalChange.undo_state == state)
    total = session.scalar(select(func.count()).select_from(JournalChange).where(*where)) or 0
    rows = session.execute(
        select(JournalChange, TrackedEntity.title).outerjoin(TrackedEntity, and_(
            TrackedEntity.portal_id == JournalChange.portal_id, TrackedEntity.entity_type == JournalChange.entity_type,
            TrackedEntity.entity_id == JournalChange.entity_id))
        .where(*where).order_by(JournalChange.id).limit(limit)).all()
    return [{"change": c, "title": title} for c, title in rows], total


def entry_run(session: Session, portal_id: int, run_id: int) -> JobRun | None:
    run = session.get(JobRun, run_id)
    if run is None or run.portal_id != portal_id or run.kind not in ENTRY_KINDS:
        return None
    return run


# --- queueing an undo -----------------------------------------------------------------------------------
def undo_key(entry_id: int) -> str:
    return f"undo:{entry_id}"


def queue_undo(session: Session, portal_id: int, entry_id: int, user_id: int | None, now: dt.datetime) -> int:
    """Queue the undo of an entry (a JobRun the worker runs, its progress shown like a re-index).
    Asked again while it is queued or running, the same run's id; a failed undo is queued again
    and takes up where it stopped (a change put back is never put back twice)."""
    run = entry_run(session, portal_id, entry_id)
    if run is None:
        raise UndoRefused("not_found")
    existing = session.scalar(select(JobRun).where(JobRun.key == undo_key(entry_id)))
    if existing is not None and existing.status in ("queued", "running"):
        return existing.id
    if existing is not None and existing.status == "done":
        raise UndoRefused("done")
    if run.status != "done":
        raise UndoRefused("not_finished")
    until = undo_until(run)
    if until is None or now > until:
        raise UndoRefused("too_old")
    total = session.scalar(select(func.count()).select_from(JournalChange).where(
        JournalChange.job_run_id == entry_id)) or 0
    if not total:
        raise UndoRefused("nothing")
    if existing is not None:  # failed before: again
        existing.status, existing.error, existing.owner, existing.finished_at = "queued", None, None, None
        existing.params = {**(existing.params or {}), "requested_by": user_id}
        return existing.id
    undo = JobRun(portal_id=portal_id, kind=UNDO_KIND, key=undo_key(entry_id), status="queued", as_of=now,
                  params={"entry_id": entry_id, "requested_by": user_id}, progress_total=total, created_at=utcnow())
    session.add(undo)
    session.flush()
    return undo.id


# --- the undo's words in a client's history ----------------------------------------------------------------
UNDO_NOTE = {
    "ru": {"daily": "отмена ежедневного запуска за {day} (№{run})", "import": "отмена загрузки статусов №{run}",
           "assignee": "ответственный возвращён: {user}"},
    "en": {"daily": "undo of the daily run of {day} (#{run})", "import": "undo of bulk load #{run}",
           "assignee": "responsible returned: {user}"},
}


def undo_note(language: str, entry: JobRun, assignee: int | None = None) -> str:
    texts = UNDO_NOTE.get(language, UNDO_NOTE["en"])
    day = (entry.params or {}).get("day") or ""
    if day:
        day = dt.date.fromisoformat(day).strftime("%d.%m.%Y")
    text = texts.get(entry.kind, texts["import"]).format(day=day, run=entry.id)
    if assignee is not None:
        text += "; " + texts["assignee"].format(user=f"#{assignee}")
    return text
