"""Applying a staged bulk load of statuses (addon.bulkload) to the portal: in batches of 50,
resumable after a crash, every valid row written exactly once; matching a large file's rows to
clients by phone and e-mail before its preview (`nezabyt import FILE` is in worker.cli)."""
from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from addon import engine, journal
from addon.bitrix.client import portal_client
from addon.bulkload.matching import mark_duplicates, match_drafts
from addon.bulkload.rows import RowDraft
from addon.bulkload.staging import queue_import
from addon.engine import STATUS_FIELD
from addon.models import ImportJob, ImportRow, JobRun, StatusHistory, TrackedEntity, utcnow
from addon.options import IN_WORK, Options
from addon.phones import phone_region_for
from addon.rules import Entity, dates

CHUNK_ROWS = 500  # rows per database round trip: ten batch calls between two commits
MATCH_CHUNK = 1000  # rows matched between two commits (about 21 calls for 1,000 phones)


@dataclass
class ImportSummary:
    job_id: int
    applied: int
    failed: int
    invalid: int
    status: str


def import_run(session: Session, job: ImportJob, now: dt.datetime) -> JobRun:
    """The JobRun that carries the job's progress (created when the CLI applies directly)."""
    run_id = queue_import(session, job, now, requeue=False)  # the caller runs it right now
    return session.get(JobRun, run_id)


def match_import(services, job_id: int, run_id: int, client=None, keep=None) -> int:
    """Match a `matching` job's rows to clients by phone and e-mail, MATCH_CHUNK rows between
    commits (the JobRun's progress counts them), then refuse a later row for a client already in
    the file and open the job's preview. Killed midway, a rerun matches only the rows still
    unmatched. Returns the rows matched by this pass."""
    with services.sessions() as session:
        job = session.get(ImportJob, job_id)
        if job is None:
            raise LookupError(f"no import job {job_id}")
        portal_id, pending = job.portal_id, job.status == "matching"
        region = phone_region_for(engine.load_context(session, portal_id).language)
    matched, last = 0, 0
    own = client is None and pending
    client = portal_client(services, portal_id) if own else client
    try:
        while pending:
            with services.sessions() as session:
                rows = session.scalars(select(ImportRow).where(
                    ImportRow.job_id == job_id, ImportRow.state == "pending", ImportRow.entity_id.is_(None),
                    ImportRow.row_no > last).order_by(ImportRow.row_no).limit(MATCH_CHUNK)).all()
                if not rows:
                    break
                drafts = [RowDraft(r.row_no, r.data, r.entity_type, r.data.get("match_by"), r.data.get("match_value"))
                          for r in rows]
                match_drafts(client, drafts, region)
                for row, draft in zip(rows, drafts):
                    last = row.row_no
                    if draft.errors:
                        row.state, row.error = "invalid", "; ".join(draft.errors)
                    else:
                        row.entity_id = draft.entity_id
                run = session.get(JobRun, run_id)
                run.progress_done = (run.progress_done or 0) + len(rows)
                session.commit()
                matched += len(rows)
            if keep is not None:
                keep()
    finally:
        if own:
            client.close()
    with services.sessions() as session:
        job = session.get(ImportJob, job_id, with_for_update=True)
        if job.status == "matching":
            found = session.execute(select(ImportRow.id, ImportRow.row_no, ImportRow.entity_type, ImportRow.entity_id)
                                    .where(ImportRow.job_id == job_id, ImportRow.state == "pending",
                                           ImportRow.entity_id.is_not(None)).order_by(ImportRow.row_no)).all()
            drafts = [RowDraft(r.row_no, {}, r.entity_type, entity_id=r.entity_id) for r in found]
            mark_duplicates(drafts)
            for r, d in zip(found, drafts):
                if d.errors:
                    session.execute(update(ImportRow).where(ImportRow.id == r.id).values(
                        state="invalid", error="; ".join(d.errors)))
            job.valid_rows = session.scalar(select(func.count()).select_from(ImportRow).where(
                ImportRow.job_id == job_id, ImportRow.state == "pending")) or 0
            job.status = "preview"
        run = session.get(JobRun, run_id)
        run.status, run.finished_at = "done", utcnow()
        run.progress_done = run.progress_total
        session.commit()
    return matched


def apply_import(services, job_id: int, now: dt.datetime, client=None, progress=None) -> ImportSummary:
    """Apply every pending row of ImportJob `job_id`, 50 to a batch call, 500 between commits.

    A row is marked `sending` (and the service table learns what we are about to write, so the
    echo event is not mistaken for a manager's change) and committed BEFORE its batch goes out;
    after the batches the rows become `applied`/`failed` in one commit. A crash in between leaves
    rows `sending`: the rerun reads those clients back and writes only the ones that do not
    already hold the value, so no row is written twice and applied rows are never touched again.
    """
    with services.sessions() as session:
        job = session.get(ImportJob, job_id)
        if job is None:
            raise LookupError(f"no import job {job_id}")
        portal_id = job.portal_id
        ctx = engine.load_context(session, portal_id)
        options, field_items = ctx.opts, ctx.field_items
        run = import_run(session, job, now)
        run.status, run.started_at = "running", run.started_at or utcnow()
        run.progress_total = job.valid_rows
        job.status = "running"
        created_by = job.created_by
        run_id = run.id
        session.commit()

    today = ctx.today(now)
    own_client = client is None
    client = client or portal_client(services, portal_id)
    try:
        while True:
            with services.sessions() as session:
                rows = session.execute(
                    select(ImportRow.id, ImportRow.row_no, ImportRow.entity_type, ImportRow.entity_id,
                           ImportRow.status, ImportRow.state, ImportRow.data)
                    .where(ImportRow.job_id == job_id, ImportRow.state.in_(("pending", "sending")))
                    .order_by(ImportRow.row_no).limit(CHUNK_ROWS)).all()
                if not rows:
                    break
                already = _already_written(client, [r for r in rows if r.state == "sending"], field_items)
                outcome: dict[int, tuple[str, str | None]] = {r.id: ("applied", None) for r in rows
                                                              if r.id in already}
                to_send, inserted = _prepare(session, portal_id, rows, outcome, field_items, options, today)
                session.commit()  # the rows are `sending` before anything leaves
                by_key = {f"r{r.id}": r for r in rows}
                if to_send:  # PortalClient.batch sends them 50 to an HTTP call, one call after another
                    answer = client.batch(to_send)
                    for key in to_send:
                        error = answer.errors.get(key)
                        outcome[by_key[key].id] = (("failed", _error_text(error, by_key[key])) if error
                                                   else ("applied", None))
                _finish_rows(session, portal_id, rows, outcome, inserted, options, today, created_by, run_id)
                applied = sum(1 for state, _ in outcome.values() if state == "applied")
                session.execute(update(ImportJob).where(ImportJob.id == job_id)
                                .values(applied_rows=ImportJob.applied_rows + applied)
                                .execution_options(synchronize_session=False))
                session.execute(update(JobRun).where(JobRun.id == run_id)
                                .values(progress_done=JobRun.progress_done + len(outcome))
                                .execution_options(synchronize_session=False))
                session.commit()
                if progress is not None:
                    progress(len(outcome))
        return _close_job(services, job_id, run_id)
    finally:
        if own_client:
            client.close()


# A chunk's updates are set-based (UPDATE ... WHERE id IN) and its new rows one executemany INSERT;
# row-by-row UPDATEs are left to the rare cases (a client already tracked, a failed write): on
# PostgreSQL every UPDATE of an executemany is its own statement, and a 100,000-row load would
# otherwise spend most of its time there.
def _row_values(options: Options, r, e: dict | None, today: dt.date) -> dict[str, Any]:
    """The service-table values once row `r` is applied (e: the client's current row, if any)."""
    set_on = dt.date.fromisoformat(r.data["status_on"]) if (r.data or {}).get("status_on") else today
    last_call = e["last_call_on"] if e else None
    due_on, warn_on = dates(options, Entity(status=r.status, status_set_on=set_on, last_call_on=last_call,
                                            open_deals=(e["open_deals"] or 0) if e else 0))
    previous = None
    if e:
        previous = e["status"] if e["status"] != r.status else e["previous_status"]
    return {"status": r.status, "status_set_on": set_on, "due_on": due_on, "warn_on": warn_on,
            "written_status": r.status, "previous_status": previous}


def _prepare(session: Session, portal_id: int, rows, outcome: dict, field_items: dict, options: Options,
             today: dt.date) -> tuple[dict[str, tuple[str, dict]], set[int]]:
    """Mark the rows `sending`, tell the service table what we are about to write, and build the
    commands. A client not tracked yet gets its row now, with the values the load gives it (removed
    again if the write fails); returns the commands and the ImportRow ids whose client row is new."""
    tracked = _tracked(session, portal_id, rows)
    commands: dict[str, tuple[str, dict]] = {}
    written_at = utcnow()
    new_rows, inserted = [], set()
    noted: dict[str, list[int]] = collections.defaultdict(list)
    sending = []
    for r in rows:
        if r.id in outcome:
            continue
        item_id = (field_items.get(r.entity_type) or {}).get(r.status)
        entity = tracked.get((r.entity_type, r.entity_id))
        if not item_id:
            outcome[r.id] = ("failed", f"the status field on the portal has no item for {r.status}: "
                                       "save the settings to re-sync it")
            continue
        if entity is not None and entity["status"] == IN_WORK and (entity["open_deals"] or 0) > 0:
            outcome[r.id] = ("failed", "the client has an open deal: its status is IN_WORK until the deal closes")
            continue
        if entity is None:
            new_rows.append({"portal_id": portal_id, "entity_type": r.entity_type, "entity_id": r.entity_id,
                             "open_deals": 0, "written_at": written_at, **_row_values(options, r, None, today)})
            inserted.add(r.id)
            tracked[(r.entity_type, r.entity_id)] = {"id": None}  # one row per client, even if listed twice
        else:
            noted[r.status].append(entity["id"])
        sending.append(r.id)
        commands[f"r{r.id}"] = (f"crm.{r.entity_type}.update", {
            "id": r.entity_id, "fields": {STATUS_FIELD: item_id},
            "params": {"REGISTER_SONET_EVENT": "N"}})
    if new_rows:
        session.execute(insert(TrackedEntity), new_rows)
    for status, ids in noted.items():
        session.execute(update(TrackedEntity).where(TrackedEntity.id.in_(ids))
                        .values(written_status=status, written_at=written_at)
                        .execution_options(synchronize_session=False))
    if sending:
        session.execute(update(ImportRow).where(ImportRow.id.in_(sending)).values(state="sending")
                        .execution_options(synchronize_session=False))
    return commands, inserted


def _finish_rows(session: Session, portal_id: int, rows, outcome: dict, inserted: set[int], options: Options,
                 today: dt.date, created_by: int | None, run_id: int | None = None) -> None:
    tracked = _tracked(session, portal_id, [r for r in rows if r.id not in inserted and r.id in outcome])
    recorded_at = utcnow()
    applied_ids, failed, entities, restore, history, changes = [], [], [], [], [], []
    dropped: dict[str, list[int]] = collections.defaultdict(list)
    for r in rows:
        state, error = outcome.get(r.id, ("pending", None))
        e = tracked.get((r.entity_type, r.entity_id))
        if state == "failed":
            failed.append({"id": r.id, "state": state, "error": error})
            if r.id in inserted:
                dropped[r.entity_type].append(r.entity_id)  # the client was not tracked before this row
            elif e is not None:
                restore.append({"id": e["id"], "written_status": e["status"]})
            continue
        if state != "applied":
            continue
        applied_ids.append(r.id)
        if r.id in inserted:  # its row was written with these values before the batch went out
            from_status = None
        else:
            values = _row_values(options, r, e, today)
            from_status = values["previous_status"]
            if e is None:  # applied on an earlier run whose service-table row was since removed
                session.execute(insert(TrackedEntity), [{"portal_id": portal_id, "entity_type": r.entity_type,
                                                         "entity_id": r.entity_id, "open_deals": 0, **values}])
            else:
                entities.append({"id": e["id"], **values})
        if run_id is not None:  # the journal's record of the load, for its undo (addon.journal)
            was = e or {}
            changes.append(journal.change_values(
                portal_id, run_id, r.entity_type, r.entity_id, old_status=was.get("status"),
                old_status_set_on=was.get("status_set_on"), old_previous_status=was.get("previous_status"),
                old_assigned_by_id=was.get("assigned_by_id"), new_status=r.status,
                new_assigned_by_id=was.get("assigned_by_id")))
        history.append({"portal_id": portal_id, "entity_type": r.entity_type, "entity_id": r.entity_id,
                        "from_status": from_status, "to_status": r.status,
                        "changed_on": dt.date.fromisoformat(r.data["status_on"]) if (r.data or {}).get("status_on")
                        else today,
                        "recorded_at": recorded_at, "cause": "import", "by_user_id": created_by,
                        "assigned_by_id": e["assigned_by_id"] if e else None, "note": f"import row {r.row_no}"})
    if applied_ids:
        session.execute(update(ImportRow).where(ImportRow.id.in_(applied_ids)).values(state="applied", error=None)
                        .execution_options(synchronize_session=False))
    if failed:
        session.execute(update(ImportRow), failed)
    if entities:
        session.execute(update(TrackedEntity), entities)
    if restore:
        session.execute(update(TrackedEntity), restore)
    for entity_type, ids in dropped.items():
        session.execute(delete(TrackedEntity).where(
            TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == entity_type,
            TrackedEntity.entity_id.in_(ids)).execution_options(synchronize_session=False))
    if history:
        session.execute(insert(StatusHistory), history)
    journal.record_changes(session, changes)


def _tracked(session: Session, portal_id: int, rows) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for entity_type in {r.entity_type for r in rows}:
        ids = [r.entity_id for r in rows if r.entity_type == entity_type]
        # The range lets PostgreSQL walk the unique index even when the table grew since its last
        # ANALYZE (a load fills it from empty), where it would filter every row of the portal.
        for e in session.execute(select(
                TrackedEntity.id, TrackedEntity.entity_id, TrackedEntity.status, TrackedEntity.previous_status,
                TrackedEntity.status_set_on,
                TrackedEntity.last_call_on, TrackedEntity.open_deals, TrackedEntity.assigned_by_id).where(
                TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == entity_type,
                TrackedEntity.entity_id.between(min(ids), max(ids)), TrackedEntity.entity_id.in_(ids))).mappings():
            out[(entity_type, e["entity_id"])] = dict(e)
    return out


def _already_written(client, rows: list[ImportRow], field_items: dict) -> set[int]:
    """Rows left `sending` by a crash whose client already holds the value we were writing."""
    if not rows:
        return set()
    commands = {}
    for entity_type in {r.entity_type for r in rows}:
        ids = sorted({r.entity_id for r in rows if r.entity_type == entity_type})
        for i in range(0, len(ids), 50):  # a list page holds 50 rows
            commands[f"{entity_type}:{i}"] = (f"crm.{entity_type}.list", {
                "filter": {"@ID": ids[i:i + 50]}, "select": ["ID", STATUS_FIELD], "start": -1})
    answer = client.batch(commands)
    if answer.errors:
        raise next(iter(answer.errors.values()))
    current: dict[tuple[str, int], str] = {}
    for key, items in answer.results.items():
        entity_type = key.split(":")[0]
        for item in items or []:
            current[(entity_type, int(item["ID"]))] = str(item.get(STATUS_FIELD) or "")
    done = set()
    for r in rows:
        item_id = str((field_items.get(r.entity_type) or {}).get(r.status) or "")
        if item_id and current.get((r.entity_type, r.entity_id)) == item_id:
            done.add(r.id)
    return done


def _error_text(error: Any, row) -> str:
    description = getattr(error, "description", "") or ""
    if description == "Not found":  # legacy crm.* errors carry no code, only this text
        return f"no {row.entity_type} with ID {row.entity_id}"
    code = getattr(error, "code", "") or ""
    return (f"{code}: {description}" if code else description or str(error))[:500]


def _close_job(services, job_id: int, run_id: int) -> ImportSummary:
    with services.sessions() as session:
        counts = dict(session.execute(select(ImportRow.state, func.count()).where(ImportRow.job_id == job_id)
                                      .group_by(ImportRow.state)).all())
        job = session.get(ImportJob, job_id)
        run = session.get(JobRun, run_id)
        job.status, job.finished_at = "done", utcnow()
        job.applied_rows = counts.get("applied", 0)
        summary = {"applied": counts.get("applied", 0), "failed": counts.get("failed", 0),
                   "invalid": counts.get("invalid", 0)}
        run.status, run.finished_at, run.summary = "done", utcnow(), summary
        run.progress_done = run.progress_total
        session.commit()
        return ImportSummary(job_id, summary["applied"], summary["failed"], summary["invalid"], "done")
