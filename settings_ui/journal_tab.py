"""The journal tab's requests: one entry's drill-down, and queueing the undo of an entry."""
from __future__ import annotations

from flask import abort, jsonify, render_template, request

from addon import journal
from addon.engine import load_context
from addon.ids import MAX_ID, parse_id
from settings_ui.blueprint import bp, now, pages
from settings_ui.i18n import translator
from settings_ui.main_page import local_time
from settings_ui.page_auth import page_user
from settings_ui.people import portal_users


@bp.post(f"/ui/journal/<int(max={MAX_ID}):run_id>")
def journal_entry(run_id: int):
    """One entry's drill-down: by manager, and its clients (one manager's, or the refused ones)."""
    user = page_user(admin=True)
    t = translator(user.lang)
    manager = request.form.get("manager", "")
    manager_id = parse_id(manager) if manager not in ("", "0") else (0 if manager == "0" else None)
    state = request.form.get("state") or None
    if state not in (None, journal.REFUSED, journal.FAILED, journal.UNDONE):
        abort(400)
    with pages().services.sessions() as session:
        ctx = load_context(session, user.portal_id)
        entry = journal.entry(session, user.portal_id, run_id)
        if entry is None:
            abort(404)
        changes, total = journal.entry_changes(session, user.portal_id, run_id, manager_id=manager_id, state=state)
        html = render_template("nezabyt/_journal_entry.html", t=t, user=user, opts=ctx.opts, e=entry,
                               changes=changes, total=total, manager=manager_id, state=state,
                               names=portal_users(user.portal_id, user.lang), now_utc=now(),
                               local_time=lambda v: local_time(ctx, v))
    return jsonify({"html": html})


@bp.post(f"/ui/journal/<int(max={MAX_ID}):run_id>/undo")
def undo_entry(run_id: int):
    user = page_user(admin=True)
    t = translator(user.lang)
    with pages().services.sessions() as session:
        try:
            undo_id = journal.queue_undo(session, user.portal_id, run_id, user.user_id, now())
        except journal.UndoRefused as exc:
            status = 404 if exc.reason == "not_found" else 409
            return jsonify({"error": exc.reason, "error_description": t("undo_refused_" + exc.reason)}), status
        session.commit()
    return jsonify({"run_id": undo_id})
