"""The settings tab's requests: saving the options (then re-dating and the portal's status list),
and the what-if preview of options not saved yet."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import jsonify, render_template, request

from addon.dating import preview_changes, redate
from addon.engine import load_context
from addon.models import PortalSettings, utcnow
from addon.options import Options
from install.manifest_apply import sync_status_fields
from settings_ui.blueprint import bp, now, pages
from settings_ui.i18n import translator
from settings_ui.main_page import render_main
from settings_ui.page_auth import page_user, wants_json
from settings_ui.people import portal_users
from settings_ui.settings_form import field_label, parse_settings_form, settings_view_from_form


@bp.post("/ui/settings")
def save_settings():
    services = pages().services
    user = page_user(admin=True)
    t = translator(user.lang)
    data, errors = parse_settings_form(request.form, user.lang)
    if errors and wants_json():  # the page's own save: the admin stays where they are
        return jsonify({"ok": False, "message": t("save_failed"), "errors": errors,
                        "labels": {k: field_label(k, request.form, t) for k in errors}}), 422
    if errors:
        return render_main(user, pages().tokens.issue(user), "settings", form_errors=errors,
                           form_view=settings_view_from_form(request.form), flash=t("save_failed"),
                           flash_kind="error"), 422
    with services.sessions() as session:
        row = session.get(PortalSettings, user.portal_id)
        if row is None:
            row = PortalSettings(portal_id=user.portal_id, version=0, data={}, field_items={})
            session.add(row)
        row.data, row.version, row.updated_by = data, (row.version or 0) + 1, user.user_id
        row.updated_at = utcnow()
        version = row.version
        session.commit()
    warnings = after_settings_saved(services, user.portal_id, now(), t)
    if wants_json():
        return jsonify({"ok": True, "message": t("saved", version=version), "warnings": warnings,
                        "codes": [st["code"] for st in data["statuses"]]})
    return render_main(user, pages().tokens.issue(user), "settings", flash=t("saved", version=version),
                       warnings=warnings)


@bp.post("/ui/settings/preview")
def whatif():
    services = pages().services
    user = page_user(admin=True)
    t = translator(user.lang)
    data, errors = parse_settings_form(request.form, user.lang)
    if errors:
        return jsonify({"errors": errors, "labels": {k: field_label(k, request.form, t) for k in errors}}), 422
    options = Options.from_dict(data)
    with services.sessions() as session:
        ctx = load_context(session, user.portal_id)
    today = ctx.today(now())
    preview = whatif_view(preview_changes(services, user.portal_id, options, today))
    html = render_template("nezabyt/_whatif.html", t=t, p=preview, opts=options,
                           names=portal_users(user.portal_id, user.lang))
    return jsonify({"html": html})


def whatif_view(preview: dict[str, Any]) -> dict[str, Any]:
    """addon.dating.preview_changes' answer, shaped for the template (largest groups first)."""
    transitions = []
    for key, n in (preview.get("by_status") or {}).items():
        from_status, _, to_status = str(key).partition("->")
        transitions.append(((from_status or None, to_status or None), n))
    return {
        "total": preview.get("entities", 0),
        "by_transition": sorted(transitions, key=lambda item: -item[1]),
        "by_manager": sorted((preview.get("by_manager") or {}).items(), key=lambda item: -item[1]),
        "sample": preview.get("sample") or [],
        "with_current_options": preview.get("with_current_options", 0),
        "due_dates_moved": preview.get("due_dates_moved", 0),
    }


def after_settings_saved(services, portal_id: int, now: dt.datetime, t) -> list[str]:
    """Re-date the service table under the new options and push the status list to the portal's
    enumeration field. The settings are saved already; a failure here is reported, not fatal."""
    warnings = []
    try:
        redate(services, portal_id)
    except Exception as exc:  # shown to the admin: the dates follow at the next re-index
        warnings.append(t("warn_redate", error=str(exc)[:300]))
    try:
        sync_status_fields(services, portal_id)
    except Exception as exc:  # shown to the admin: the list follows at the next save or update
        warnings.append(t("warn_sync", error=str(exc)[:300]))
    return warnings
