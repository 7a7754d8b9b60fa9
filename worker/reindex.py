"""Index / re-index: read every client's status from the portal into the service table and re-date
everything (the dates after a settings change and the what-if preview are addon.dating's)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from sqlalchemy import delete, select

from addon import engine, rules
from addon.bitrix.client import portal_client
from addon.models import JobRun, TrackedEntity, utcnow

COMMIT_EVERY = 500


@dataclass
class ReindexReport:
    portal_id: int
    read: int = 0
    tracked: int = 0
    changed: int = 0
    untracked: int = 0
    removed: int = 0
    calls: int = 0
    job_run_id: int | None = None
    errors: list[str] = field(default_factory=list)


def _portal_total(client, method: str) -> int:
    envelope = client.call_envelope(method, {"select": ["ID"], "start": 0})
    try:
        return int(envelope.get("total") or len(envelope.get("result") or []))
    except (TypeError, ValueError):
        return 0


def _last_calls(client, ctx, today: dt.date) -> dict[tuple[str, int], dt.date]:
    """The day of each client's last completed call within the longest possible ladder: an older
    call cannot change where a client stands today."""
    horizon = sum(s.days or 0 for s in ctx.opts.statuses) + ctx.opts.call_lookback_days + 1
    since = dt.datetime.combine(today - dt.timedelta(days=horizon), dt.time(), tzinfo=ctx.tz).isoformat()
    calls: dict[tuple[str, int], dt.date] = {}
    owner_types = {"contact": "3", "company": "4"}
    for kind in ctx.opts.entity_types:
        flt = {"TYPE_ID": 2, "COMPLETED": "Y", "OWNER_TYPE_ID": owner_types[kind], ">=START_TIME": since}
        for act in client.list_all("crm.activity.list", filter=flt,
                                   select=["ID", "OWNER_ID", "OWNER_TYPE_ID", "START_TIME", "END_TIME"]):
            owner = engine.int_or_none(act.get("OWNER_ID"))
            day = ctx.day_of(act.get("END_TIME")) or ctx.day_of(act.get("START_TIME"))
            if owner is None or day is None or day > today:
                continue
            key = (kind, owner)
            if key not in calls or day > calls[key]:
                calls[key] = day
    return calls


def reindex(services, portal_id: int, now: dt.datetime, job_run_id: int | None = None, *, client=None,
            keep=None) -> ReindexReport:
    """Read every contact/company's status (a narrow select, ID-windowed) into the service table.
    A status the table already has keeps its dates; a new or different one counts from the day of
    the entity's DATE_MODIFY. Progress goes to the JobRun row for the UI's progress bar."""
    report = ReindexReport(portal_id)
    own = client is None
    client = client or portal_client(services, portal_id)
    try:
        with services.sessions() as session:
            ctx = engine.load_context(session, portal_id)
            today = ctx.today(now)
            job = session.get(JobRun, job_run_id) if job_run_id is not None else None
            if job is None:
                job = JobRun(portal_id=portal_id, kind="reindex", status="running", as_of=_naive(now),
                             owner=services.settings.worker_id)
                session.add(job)
            job.status, job.started_at, job.error = "running", utcnow(), None
            job.progress_done = 0
            job.progress_total = sum(_portal_total(client, f"crm.{k}.list") for k in ctx.opts.entity_types)
            session.commit()
            report.job_run_id = job_id = job.id
        calls = _last_calls(client, ctx, today)
        report.calls = len(calls)
        for kind in ctx.opts.entity_types:
            seen: set[int] = set()
            batch: list[dict] = []
            select_fields = ["ID", "ASSIGNED_BY_ID", "DATE_MODIFY", "DATE_CREATE", engine.STATUS_FIELD,
                             engine.REASON_FIELD] + (["TITLE"] if kind == "company" else ["NAME", "LAST_NAME"])
            for fields in client.list_all(f"crm.{kind}.list", select=select_fields):
                batch.append(fields)
                if len(batch) >= COMMIT_EVERY:
                    _index_chunk(services, ctx, kind, batch, calls, today, job_id, report, seen)
                    batch = []
                    if keep is not None:
                        keep()
            _index_chunk(services, ctx, kind, batch, calls, today, job_id, report, seen)
            with services.sessions() as session:
                # Clients deleted in the portal while nobody listened are no longer tracked.
                ids = set(session.scalars(select(TrackedEntity.entity_id).where(
                    TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == kind)))
                gone = sorted(ids - seen)
                for start in range(0, len(gone), 500):
                    session.execute(delete(TrackedEntity).where(
                        TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == kind,
                        TrackedEntity.entity_id.in_(gone[start:start + 500])))
                report.removed += len(gone)
                session.commit()
        with services.sessions() as session:
            job = session.get(JobRun, job_id)
            job.status, job.finished_at = "done", utcnow()
            job.progress_done = max(job.progress_done, report.read)
            job.progress_total = max(job.progress_total, report.read)
            job.summary = {"read": report.read, "tracked": report.tracked, "changed": report.changed,
                           "untracked": report.untracked, "removed": report.removed}
            session.commit()
    except Exception as exc:
        if report.job_run_id is not None:
            with services.sessions() as session:
                job = session.get(JobRun, report.job_run_id)
                job.status, job.error, job.finished_at = "failed", f"{type(exc).__name__}: {exc}"[:2000], utcnow()
                session.commit()
        raise
    finally:
        if own:
            client.close()
    return report


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _index_chunk(services, ctx, kind: str, batch: list[dict], calls, today: dt.date, job_id: int,
                 report: ReindexReport, seen: set[int]) -> None:
    if not batch:
        return
    opts = ctx.opts
    with services.sessions() as session:
        ids = [int(f["ID"]) for f in batch]
        rows = {r.entity_id: r for r in session.scalars(select(TrackedEntity).where(
            TrackedEntity.portal_id == ctx.portal_id, TrackedEntity.entity_type == kind,
            TrackedEntity.entity_id.in_(ids)))}
        for fields in batch:
            eid = int(fields["ID"])
            seen.add(eid)
            report.read += 1
            code = ctx.code_of(kind, fields.get(engine.STATUS_FIELD))
            if code is not None and code.startswith("?"):
                report.errors.append(f"{kind} {eid}: unknown list item {code[1:]}")
                code = None
            row = rows.get(eid)
            if code is None and row is None:
                report.untracked += 1
                continue
            if row is None:
                row = TrackedEntity(portal_id=ctx.portal_id, entity_type=kind, entity_id=eid, open_deals=0)
                session.add(row)
            row.assigned_by_id = engine.int_or_none(fields.get("ASSIGNED_BY_ID"))
            row.title = engine.entity_title(kind, fields)
            e = engine.entity_of(row)
            call = calls.get((kind, eid))
            if code != rules.normalize_status(row.status):
                on = min(ctx.day_of(fields.get("DATE_MODIFY")) or today, today)
                e, steps = rules.set_status(opts, e, code, on, "index")
                # Only the index line itself: decays the table had missed never reached the portal.
                engine.add_history(session, row, [s for s in steps if s.cause == "index"])
                report.changed += 1
            if call is not None and (e.last_call_on is None or call > e.last_call_on):
                e = replace(e, last_call_on=call)
            engine.store(row, e, opts)
            if row.status is None:
                report.untracked += 1
            else:
                report.tracked += 1
        job = session.get(JobRun, job_id)
        job.progress_done = report.read
        job.progress_total = max(job.progress_total, report.read)
        session.commit()
