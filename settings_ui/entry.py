"""Where the portal opens the pages (the app page, a client card's tab), the page token's renewal,
and the app page's tab switch."""
from __future__ import annotations

import json
import re
from typing import Any

from flask import abort, jsonify, render_template, request

from addon.engine import load_context
from addon.ids import parse_id
from settings_ui.access import AccessDenied, verify_user
from settings_ui.blueprint import bp, pages
from settings_ui.i18n import translator
from settings_ui.main_page import ADMIN_TABS, TABS, render_main, tracked_entity
from settings_ui.page_auth import opened_by, page_user
from settings_ui.people import portal_users

PLACEMENT_ENTITIES = {"CRM_CONTACT_DETAIL_TAB": "contact", "CRM_COMPANY_DETAIL_TAB": "company"}


@bp.route("/app", methods=["POST", "GET"])
def app_page():
    if request.method == "GET":
        raise AccessDenied("no_auth")
    user = opened_by(verify_user(pages().services, request.form.get("member_id", ""), request.form.get("AUTH_ID", ""),
                                 request.args.get("LANG") or request.form.get("LANG")))
    return render_main(user, pages().tokens.issue(user), "settings" if user.is_admin else "dashboard")


@bp.post("/placement/<code>")
def placement(code: str):
    services = pages().services
    entity_type = PLACEMENT_ENTITIES.get(code.upper())  # the manifest binds lower-case paths
    if entity_type is None:
        abort(404)
    user = opened_by(verify_user(services, request.form.get("member_id", ""), request.form.get("AUTH_ID", ""),
                                 request.args.get("LANG") or request.form.get("LANG")))
    try:
        entity_id = parse_id(json.loads(request.form.get("PLACEMENT_OPTIONS") or "{}").get("ID"))
    except (ValueError, TypeError, AttributeError):
        entity_id = None
    if entity_id is None:
        abort(400)
    t = translator(user.lang)
    with services.sessions() as session:
        ctx = load_context(session, user.portal_id)
        row, history = tracked_entity(session, user.portal_id, entity_type, entity_id)
        return render_template("nezabyt/card.html", t=t, user=user, token=pages().tokens.issue(user), ctx=ctx,
                               opts=ctx.opts, row=row, history=history, entity_type=entity_type,
                               entity_id=entity_id, names=portal_users(user.portal_id, user.lang))


@bp.post("/ui/token")
def renew_token():
    """A fresh page token for a page whose own has expired: the portal's refreshed AUTH_ID
    (BX24.refreshAuth) is checked exactly as when the app is opened, so the form stays as it is."""
    user = verify_user(pages().services, request.form.get("member_id", ""), request.form.get("AUTH_ID", ""),
                       request.form.get("LANG"))
    return jsonify({"token": pages().tokens.issue(user)})


@bp.post("/ui/token/check")
def check_token():
    """Answers 403 with the reason when the page token no longer serves (before a form is sent)."""
    page_user()
    return jsonify({"ok": True})


@bp.post("/ui/page")
def page():
    user = page_user()
    tab = request.form.get("tab", "settings")
    job = request.form.get("import_job", "")
    extra: dict[str, Any] = {"import_job_id": parse_id(job)} if parse_id(job) and user.is_admin else {}
    month = request.form.get("month", "")
    if re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        extra["ranking_month"] = month
    if tab in ADMIN_TABS and not user.is_admin:
        tab = "dashboard"
    return render_main(user, pages().tokens.issue(user), tab if tab in TABS else "settings", **extra)
