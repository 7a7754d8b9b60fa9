"""The index tab's requests: starting a re-index, any queued run's progress, and the lookup of
one client's service row."""
from __future__ import annotations

from flask import abort, jsonify, render_template, request
from sqlalchemy import select

from addon.engine import load_context
from addon.ids import MAX_ID, parse_id
from addon.models import JobRun, utcnow
from settings_ui.blueprint import bp, now, pages
from settings_ui.i18n import translator
from settings_ui.main_page import tracked_entity
from settings_ui.page_auth import page_user
from settings_ui.people import portal_users


@bp.post("/ui/index")
def start_index():
    user = page_user(admin=True)
    with pages().services.sessions() as session:
        run = session.scalars(select(JobRun).where(
            JobRun.portal_id == user.portal_id, JobRun.kind == "reindex",
            JobRun.status.in_(("queued", "running"))).order_by(JobRun.id.desc())).first()
        if run is None:  # the worker picks queued runs up and writes progress into the row
            run = JobRun(portal_id=user.portal_id, kind="reindex", status="queued", as_of=now(),
                         params={"requested_by": user.user_id}, created_at=utcnow())
            session.add(run)
            session.commit()
        return jsonify({"run_id": run.id})


@bp.route(f"/ui/jobs/<int(max={MAX_ID}):run_id>", methods=["GET", "POST"])
def job_progress(run_id: int):
    user = page_user()
    with pages().services.sessions() as session:
        run = session.get(JobRun, run_id)
        if run is None or run.portal_id != user.portal_id:
            abort(404)
        total, done = run.progress_total or 0, run.progress_done or 0
        percent = 100 if run.status == "done" else (int(100 * done / total) if total else 0)
        return jsonify({"id": run.id, "kind": run.kind, "status": run.status, "done": done, "total": total,
                        "percent": min(percent, 100), "error": run.error, "summary": run.summary or {}})


@bp.post("/ui/debug")
def debug_lookup():
    user = page_user()
    t = translator(user.lang)
    entity_type = request.form.get("entity_type", "contact")
    entity_id = parse_id(request.form.get("entity_id", ""))
    if entity_id is None:
        return jsonify({"html": f'<p class="muted">{t("debug_none")}</p>'})
    with pages().services.sessions() as session:
        ctx = load_context(session, user.portal_id)
        row, history = tracked_entity(session, user.portal_id, entity_type, entity_id)
        if row is not None and not user.is_admin and row.assigned_by_id != user.user_id:
            row, history = None, []  # a manager looks up only their own clients
        html = render_template("nezabyt/_entity.html", t=t, opts=ctx.opts, row=row, history=history,
                               entity_type=entity_type, entity_id=entity_id, names=portal_users(user.portal_id, user.lang))
    return jsonify({"html": html})
