"""The robots tab's own request: the admin marks who is absent for the distribution robot."""
from __future__ import annotations

from flask import abort, request

from addon.ids import parse_id
from addon.robots.store import absent_users, mark_absent
from settings_ui.blueprint import bp, pages
from settings_ui.i18n import translator
from settings_ui.main_page import render_main
from settings_ui.page_auth import page_user
from settings_ui.people import portal_users


@bp.post("/ui/robots/absences")
def save_absences():
    """The admin's absence marks: every user shown on the form is marked absent or back."""
    user = page_user(admin=True)
    t = translator(user.lang)
    shown = {parse_id(v) for v in request.form.getlist("shown")} - {None}
    absent = {parse_id(v) for v in request.form.getlist("absent")} - {None}
    if not absent <= shown:
        abort(400)
    with pages().services.sessions() as session:
        for uid in sorted(shown):
            mark_absent(session, user.portal_id, uid, absent=uid in absent)
        session.commit()
        now_absent = sorted(absent_users(session, user.portal_id))
    names = portal_users(user.portal_id, user.lang)
    listed = ", ".join(names.get(u, f"#{u}") for u in now_absent) or t("nobody")
    return render_main(user, pages().tokens.issue(user), "robots", flash=t("absent_saved", names=listed))
