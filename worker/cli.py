"""The worker's console commands: `nezabyt worker [--once]`, `decay`, `reconcile`, `reindex`, `debug`,
`import`."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal

import click
from sqlalchemy import select

from addon import engine, leases
from addon.bitrix.client import portal_client
from addon.bulkload.files import BulkLoadError
from addon.bulkload.staging import prepare_import, preview_errors
from addon.heartbeat import beating, keep_beating
from addon.logs import configure_logging
from addon.models import ImportJob, JobRun
from addon.phones import phone_region_for
from addon.services import build_services, services_scope
from worker.daily_summary import DailySummary, daily_key
from worker.debug import lookup
from worker.imports import apply_import
from worker.jobs import active_portals, portal_cycle, run_once, settle_gc
from worker.reconcile import reconcile_portal
from worker.reindex import reindex
from worker.schedule import build_scheduler
from addon.worker_status import portal_status, status_text


def _now(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.timezone.utc)
    moment = dt.datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _services():
    return services_scope()


def _portal_id(services, portal: str) -> int:
    with services.sessions() as session:
        row = engine.find_portal(session, portal)
        if row is None:
            raise click.ClickException(f"no portal {portal!r} (give its member_id or domain)")
        return row.id


now_option = click.option("--now", "now_text", default=None, help="act as of this ISO instant (default: now)")
portal_option = click.option("--portal", required=True, help="the portal's member_id or domain")


@click.group("worker", invoke_without_command=True)
@click.option("--once", is_flag=True, help="do what is stored and due, then exit")
@now_option
@click.pass_context
def worker_command(ctx: click.Context, once: bool, now_text: str | None) -> None:
    """Run the worker: events, daily runs, reconcile, robots, re-index and bulk loads, many portals
    side by side (NEZABYT_WORKER_CONCURRENCY); run more worker processes on PostgreSQL to scale out."""
    if ctx.invoked_subcommand is not None:
        return
    configure_logging()  # text lines, or JSON with LOG_FORMAT=json; quiets the chatty libraries
    with services_scope(pre_ping=False) as services:  # addon.db.make_engine: why the worker does not ping
        settle_gc()
        if once:
            with beating(services):  # the heartbeat `nezabyt doctor` looks for, during the pass too
                report = run_once(services, _now(now_text))
            click.echo(f"events {report.events}, daily runs {report.daily_runs}, jobs {report.jobs}, "
                       f"robot calls {report.robot_calls}, timers {report.timers}, "
                       f"portals held by others {report.skipped_portals}")
            for error in report.errors:
                click.echo(f"error: {error}", err=True)
            if report.errors:
                raise SystemExit(1)
            return
        scheduler = build_scheduler(services, blocking=True)
        keep_beating(scheduler, services)  # the heartbeat `nezabyt doctor` looks for
        # A platform stops the worker with SIGTERM: finish the running jobs' current step and leave
        # (every job is safe to stop anywhere; what is left is picked up by the next start).
        signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            pass


@worker_command.command("status")
@click.option("--portal", default=None, help="one portal (member_id or domain); default: all")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status_command(portal: str | None, as_json: bool) -> None:
    """Per portal: last event processed, last daily run, lease holder, calls made, parked or failing."""
    with _services() as services:
        rows = portal_status(services, [_portal_id(services, portal)] if portal else None)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
    else:
        click.echo(status_text(rows))


@click.command("decay")
@portal_option
@now_option
def decay_command(portal: str, now_text: str | None) -> None:
    """One daily run as of --now: pending events first, then decay, loss actions and the digest."""
    with _services() as services:
        pid = _portal_id(services, portal)
        now = _now(now_text)
        report = portal_cycle(services, pid, now, daily=True)
        if report.skipped_portals:
            raise click.ClickException("another worker holds this portal right now; try again shortly")
        with services.sessions() as session:
            day = engine.load_context(session, pid).today(now)
            job = session.scalar(select(JobRun).where(JobRun.key == daily_key(pid, day)))
            click.echo(DailySummary.from_dict(job.summary).text() if job is not None else "nothing run")


@click.command("reconcile")
@click.option("--portal", default=None, help="one portal (member_id or domain); default: all")
@now_option
def reconcile_command(portal: str | None, now_text: str | None) -> None:
    """Store the changes whose events were lost (by DATE_MODIFY / LAST_UPDATED)."""
    with _services() as services:
        now = _now(now_text)
        ids = [_portal_id(services, portal)] if portal else active_portals(services)
        for pid in ids:
            click.echo(f"portal {pid}: {reconcile_portal(services, pid, now)}")


@click.command("reindex")
@portal_option
@now_option
def reindex_command(portal: str, now_text: str | None) -> None:
    """Read every client's status from the portal into the service table and re-date it."""
    with _services() as services:
        pid = _portal_id(services, portal)
        with leases.holding(services, pid) as keep:
            if keep is None:
                raise click.ClickException("another worker holds this portal right now; try again shortly")
            report = reindex(services, pid, _now(now_text), keep=keep)
        click.echo(f"read {report.read}, tracked {report.tracked}, changed {report.changed}, "
                   f"untracked {report.untracked}, removed {report.removed}")
        for error in report.errors[:20]:
            click.echo(f"warning: {error}", err=True)


@click.command("debug")
@portal_option
@click.option("--entity", required=True, help="contact:123 or company:45")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def debug_command(portal: str, entity: str, as_json: bool) -> None:
    """A client's service-table row (dates set, last call, due, warn) and its full history."""
    with _services() as services:
        pid = _portal_id(services, portal)
        try:
            kind, _, raw_id = entity.partition(":")
            found = lookup(services, pid, kind.strip().lower(), int(raw_id))
        except ValueError as exc:
            raise click.ClickException(f"--entity is contact:ID or company:ID ({exc})") from exc
        if as_json:
            click.echo(json.dumps(found, ensure_ascii=False, indent=2, default=str))
        else:
            click.echo(format_lookup(found))


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--portal", "portal_key", required=True, help="the portal's member_id or domain")
@click.option("--apply", "do_apply", is_flag=True, help="write the statuses to the portal (else preview only)")
@click.option("--entity-type", default="contact", type=click.Choice(["contact", "company"]),
              help="for rows without a Type column")
@click.option("--now", "now_text", default=None, help="ISO instant the load is dated by (default: now)")
def import_command(file: str, portal_key: str, do_apply: bool, entity_type: str, now_text: str | None) -> None:
    """Load statuses from a CSV/XLSX FILE: preview, and with --apply write them.

    Running the same command again after an interruption continues the unfinished load of the
    same file instead of starting a new one."""
    now = dt.datetime.fromisoformat(now_text) if now_text else dt.datetime.now(dt.timezone.utc)
    now = now.astimezone(dt.timezone.utc).replace(tzinfo=None) if now.tzinfo else now
    services = build_services()
    filename = os.path.basename(file)
    try:
        with services.sessions() as session:
            portal = engine.find_portal(session, portal_key)
            if portal is None:
                raise click.ClickException(f"no portal with member_id or domain {portal_key!r}")
            portal_id, language = portal.id, portal.language
            job = session.scalars(select(ImportJob).where(
                ImportJob.portal_id == portal_id, ImportJob.filename == filename,
                ImportJob.status.in_(("queued", "running"))).order_by(ImportJob.id.desc())).first()
            ctx = engine.load_context(session, portal_id)
        if job is not None and do_apply:
            job_id = job.id
            click.echo(f"continuing import {job_id} of {filename}: {job.applied_rows} of {job.valid_rows} applied")
        else:
            with open(file, "rb") as fh:
                content = fh.read()
            with services.sessions() as session, portal_client(services, portal_id) as client:
                try:
                    staged = prepare_import(session, client, portal_id, filename, content, ctx.opts, None, now,
                                            ctx.today(now), entity_type, phone_region_for(language))
                except BulkLoadError as exc:
                    raise click.ClickException(str(exc)) from exc
                session.commit()
                job_id = staged.job_id
                click.echo(f"import {job_id}: {staged.total_rows} rows, {staged.valid_rows} valid, "
                           f"{staged.invalid_rows} with errors")
                for row in preview_errors(session, job_id, limit=20):
                    click.echo(f"  row {row.row_no}: {row.error}")
        if not do_apply:
            click.echo("preview only: run again with --apply to write the statuses")
            return
        done = [0]

        def report(n: int) -> None:
            done[0] += n
            if done[0] % 10_000 < n:  # a line every 10,000 rows
                click.echo(f"  {done[0]} rows processed")

        summary = apply_import(services, job_id, now, progress=report)
        click.echo(f"import {job_id} done: {summary.applied} applied, {summary.failed} failed, "
                   f"{summary.invalid} invalid")
    finally:
        services.dispose()


def format_lookup(found: dict) -> str:
    row = found.get("row")
    lines = [f"{found['entity_type']} {found['entity_id']}"]
    if row is None:
        lines.append("  not in the service table (not tracked)")
    else:
        for name in ("status", "status_set_on", "last_call_on", "due_on", "warn_on", "assigned_by_id",
                     "previous_status", "status_before_deal", "open_deals", "written_status", "title"):
            lines.append(f"  {name}: {row.get(name)}")
    lines.append("history:")
    for h in found.get("history", []):
        who = f" by user {h['by_user_id']}" if h.get("by_user_id") else ""
        note = f" ({h['note']})" if h.get("note") else ""
        lines.append(f"  {h['changed_on']}: {h['from_status'] or '—'} -> {h['to_status'] or '—'} "
                     f"[{h['cause']}]{who}{note}")
    return "\n".join(lines)
