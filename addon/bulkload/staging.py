"""Storing a validated bulk load as an ImportJob for preview, and queuing the worker's runs that match
or apply it."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from addon.bulkload.files import BulkLoadError, ImportLimits
from addon.bulkload.matching import Batcher, mark_duplicates, match_drafts
from addon.bulkload.rows import RowDraft, parse_rows
from addon.models import ImportJob, ImportRow, JobRun
from addon.options import Options

STAGE_CHUNK = 1000  # rows inserted per INSERT
# Rows matched by phone or e-mail inside the upload request: a few calls, a second or two at the
# portal's pace. A larger file is staged as "matching" and matched by the worker with a progress
# bar: 10,000 phones cost about 210 calls, minutes at 2 calls a second, far past a request's timeout.
INLINE_MATCH_ROWS = 1000


@dataclass
class StagedImport:
    job_id: int
    total_rows: int
    valid_rows: int
    invalid_rows: int
    match_run_id: int | None = None  # the worker matches the rows first (see INLINE_MATCH_ROWS)


def needs_match(draft: RowDraft) -> bool:
    """A valid row that names its client by phone or e-mail: the portal must say which it is."""
    return draft.valid and draft.entity_id is None and draft.match_by in ("phone", "email")


def stage_import(session: Session, portal_id: int, filename: str, drafts: list[RowDraft],
                 created_by: int | None, now: dt.datetime, status: str = "preview") -> StagedImport:
    """Store the validated rows as an ImportJob in `preview` (or `matching`) (the caller commits)."""
    valid = sum(1 for d in drafts if d.valid)
    job = ImportJob(portal_id=portal_id, filename=filename[:255], status=status, total_rows=len(drafts),
                    valid_rows=valid, applied_rows=0, created_by=created_by, created_at=now)
    session.add(job)
    session.flush()
    for i in range(0, len(drafts), STAGE_CHUNK):  # the row dicts of one chunk at a time
        session.execute(insert(ImportRow), [_row_values(job.id, d) for d in drafts[i:i + STAGE_CHUNK]])
    return StagedImport(job.id, len(drafts), valid, len(drafts) - valid)


def _row_values(job_id: int, d: RowDraft) -> dict[str, Any]:
    return {
        "job_id": job_id, "row_no": d.row_no,
        "data": dict(d.data, **({"status_on": d.status_on.isoformat()} if d.status_on else {}),
                     **({"match_by": d.match_by, "match_value": d.match_value} if d.match_by else {})),
        "entity_type": d.entity_type, "entity_id": d.entity_id, "status": d.status,
        "state": "pending" if d.valid else "invalid", "error": "; ".join(d.errors) or None,
    }


def prepare_import(session: Session, client: Batcher | None, portal_id: int, filename: str, content: bytes,
                   options: Options, created_by: int | None, now: dt.datetime, today: dt.date,
                   default_entity_type: str = "contact", region: str = "RU",
                   inline_match_rows: int | None = None, limits: ImportLimits = ImportLimits()) -> StagedImport:
    """Read, validate, match (when a client is given) and stage a file; nothing reaches the portal.
    With `inline_match_rows`, a file with more rows to match by phone or e-mail is staged as
    `matching` with a queued JobRun(kind="import_match"): the worker matches it (worker.imports)."""
    drafts = list(parse_rows(filename, content, options, default_entity_type, region, today, limits))
    if not drafts:
        raise BulkLoadError("the file has a header but no rows")
    to_match = sum(1 for d in drafts if needs_match(d))
    if client is not None and inline_match_rows is not None and to_match > inline_match_rows:
        mark_duplicates(drafts)  # rows by ID now; matched rows once the worker has matched them
        staged = stage_import(session, portal_id, filename, drafts, created_by, now, status="matching")
        staged.match_run_id = queue_match(session, staged.job_id, portal_id, to_match, now)
        return staged
    if client is not None:
        match_drafts(client, drafts, region)
    mark_duplicates(drafts)
    return stage_import(session, portal_id, filename, drafts, created_by, now)


def queue_match(session: Session, job_id: int, portal_id: int, rows: int, now: dt.datetime) -> int:
    """The worker's run matching a staged file's rows (its progress bar counts them)."""
    run = JobRun(portal_id=portal_id, kind="import_match", key=f"import-match:{job_id}", status="queued",
                 as_of=now, params={"import_job_id": job_id}, progress_done=0, progress_total=rows, created_at=now)
    session.add(run)
    session.flush()
    return run.id


def queue_import(session: Session, job: ImportJob, now: dt.datetime, requeue: bool = True) -> int:
    """Queue an import for the worker: the job goes `queued` and a JobRun(kind="import") is added.
    Returns the JobRun id (the one the progress bar polls); queuing twice returns the same run, and
    re-queues it if it had stopped before the end."""
    key = f"import:{job.id}"
    run = session.scalars(select(JobRun).where(JobRun.key == key)).first()
    if run is None:
        run = JobRun(portal_id=job.portal_id, kind="import", key=key, status="queued", as_of=now,
                     params={"import_job_id": job.id}, progress_done=0, progress_total=job.valid_rows,
                     created_at=now)
        session.add(run)
    elif requeue and run.status in ("running", "failed") and job.status != "done":
        # Asked again for a load that stopped (its worker died, the portal failed): queue it again.
        # Harmless if it is in fact still running: the portal's lease keeps a second worker off,
        # and the rerun applies only the rows still pending.
        run.status, run.error = "queued", None
    if job.status == "preview":
        session.execute(update(ImportJob).where(ImportJob.id == job.id).values(status="queued"))
    session.flush()
    return run.id


def preview_errors(session: Session, job_id: int, limit: int = 200) -> list[ImportRow]:
    return list(session.scalars(select(ImportRow).where(ImportRow.job_id == job_id, ImportRow.state == "invalid")
                                .order_by(ImportRow.row_no).limit(limit)))

