"""The app page as rendered (`render_main`: every tab's data at once) and the readers other pages
share: a client's row and history, local times."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import render_template
from sqlalchemy import select

from addon import journal
from addon.bitrix.client import blocked_until
from addon.bulkload.staging import preview_errors
from addon.engine import load_context
from addon.models import ImportJob, JobRun, StatusHistory, TrackedEntity
from addon.options import (
    DEFAULT_TEMPLATES,
    IN_WORK,
    LOST,
    SYSTEM_CODES,
    TEMPLATE_KINDS,
    TEMPLATE_PLACEHOLDERS,
)
from addon.robots.registry import ROBOTS
from addon.robots.store import absent_users, close_reason_counts, ranking_report
from settings_ui.access import PageUser
from settings_ui.blueprint import now, pages
from settings_ui.dashboard import build_dashboard, changes_chart, managers_chart
from settings_ui.i18n import row_error, translator
from settings_ui.people import active_users, portal_users
from settings_ui.settings_form import settings_view
from addon.worker_status import portal_status

TABS = ("settings", "index", "import", "journal", "dashboard", "robots")
ADMIN_TABS = ("import", "journal")  # not shown to a manager


def render_main(user: PageUser, token: str, tab: str, **extra: Any) -> str:
    services = pages().services
    t = translator(user.lang)
    with services.sessions() as session:
        ctx = load_context(session, user.portal_id)
        today = ctx.today(now())
        names = portal_users(user.portal_id, user.lang)
        board = build_dashboard(session, user.portal_id, ctx.opts, today,
                                only_manager=None if user.is_admin else user.user_id)
        job_id = extra.pop("import_job_id", None)
        import_job = session.get(ImportJob, job_id) if job_id else None
        if import_job is not None and import_job.portal_id != user.portal_id:
            import_job = None
        import_errors, match_run = [], None
        if import_job is not None and import_job.status == "matching":
            match_run = session.scalar(select(JobRun).where(JobRun.key == f"import-match:{import_job.id}"))
        elif import_job is not None:
            import_errors = preview_errors(session, import_job.id)
        recent_imports = list(session.scalars(select(ImportJob).where(ImportJob.portal_id == user.portal_id)
                                              .order_by(ImportJob.id.desc()).limit(5)))
        last_index = session.scalars(select(JobRun).where(JobRun.portal_id == user.portal_id,
                                                          JobRun.kind == "reindex")
                                     .order_by(JobRun.id.desc())).first()
        robots = robots_view(session, user.portal_id, ctx,
                             extra.pop("ranking_month", None) or ctx.local(now()).strftime("%Y-%m"))
        journal_entries = journal.entries(session, user.portal_id) if user.is_admin else []
        import_runs = {r.params.get("import_job_id"): r for r in session.scalars(
            select(JobRun).where(JobRun.portal_id == user.portal_id, JobRun.kind == "import")
            .order_by(JobRun.id.desc()).limit(20))}
        return render_template(
            "nezabyt/main.html", t=t, user=user, token=token, tab=tab, opts=ctx.opts, ctx=ctx, today=today,
            view=extra.pop("form_view", None) or settings_view(ctx.opts),
            errors=extra.pop("form_errors", {}), names=names, active_names=active_users(user.portal_id),
            board=board,
            managers_svg=managers_chart(board, names),
            changes_svg=changes_chart(board, {k: t(k) for k in ("decays", "losses", "transfers")}),
            import_job=import_job, import_errors=import_errors, recent_imports=recent_imports,
            import_runs=import_runs, match_run=match_run, robots=robots, last_index=last_index,
            journal_entries=journal_entries, now_utc=now(), tabs=TABS, admin_tabs=ADMIN_TABS,
            template_kinds=TEMPLATE_KINDS, portal_block=block_notice(session, user.portal_id, ctx),
            placeholders=TEMPLATE_PLACEHOLDERS, default_templates=DEFAULT_TEMPLATES,
            system_codes=SYSTEM_CODES, IN_WORK=IN_WORK, LOST=LOST, row_error=row_error,
            worker_state=worker_state(services, user), local_time=lambda v: local_time(ctx, v), **extra)


def worker_state(services, user):
    """For an admin: what `nezabyt worker status` shows for this portal (addon.worker_status)."""
    if not user.is_admin:
        return None
    rows = portal_status(services, [user.portal_id])
    return rows[0] if rows else None


def local_time(ctx, value) -> str:
    """A stored naive-UTC instant in the portal's time zone, or a dash."""
    if value is None:
        return "—"
    return value.replace(tzinfo=dt.timezone.utc).astimezone(ctx.tz).strftime("%d.%m.%Y %H:%M:%S")


def tracked_entity(session, portal_id: int, entity_type: str, entity_id: int):
    """A client's service row (or None) and its latest 200 status changes, newest first."""
    row = session.scalars(select(TrackedEntity).where(
        TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == entity_type,
        TrackedEntity.entity_id == entity_id)).first()
    history = list(session.scalars(select(StatusHistory).where(
        StatusHistory.portal_id == portal_id, StatusHistory.entity_type == entity_type,
        StatusHistory.entity_id == entity_id).order_by(StatusHistory.id.desc()).limit(200)))
    return row, history


def robots_view(session, portal_id: int, ctx, month: str) -> dict[str, Any]:
    """The robots tab: who is marked absent, the month's ranking, the close reasons."""
    return {"catalog": robot_catalog(ctx.opts.language if ctx.opts.language in ("ru", "en") else "ru"),
            "absent": absent_users(session, portal_id), "month": month,
            "ranking": ranking_report(session, portal_id, month, ctx.tz),  # best first
            "reasons": close_reason_counts(session, portal_id)}


def robot_catalog(lang: str) -> list[dict[str, Any]]:
    """Every pipeline robot Nezabyt registers (addon.robots.catalog): its name, what it does and
    the settings the admin fills in when adding it to a pipeline's automation rules."""
    return [{"key": r.key, "name": r.name.get(lang) or r.name["ru"],
             "description": r.description.get(lang) or r.description["ru"],
             "settings": [p["Name"].get(lang) or p["Name"]["ru"] for p in r.properties.values()]}
            for r in ROBOTS]


def block_notice(session, portal_id: int, ctx) -> str | None:
    """When Bitrix24 blocked the portal's REST API (OVERLOAD_LIMIT): the local time of the next probe."""
    until = blocked_until(session, portal_id)
    return ctx.local(dt.datetime.fromtimestamp(until, dt.timezone.utc).replace(tzinfo=None)).strftime("%d.%m %H:%M") \
        if until else None
