"""The admin's pages inside Bitrix24: the app page (settings, what-if preview, index and lookup, bulk
load, dashboard) and the contact/company card tab. Views are thin: check the page token, hand
over to the core, commit, render."""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from flask import Blueprint, Response, abort, g, jsonify, render_template, request, stream_with_context
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from addon import journal
from addon.ids import MAX_ID, parse_id
from addon.models import ImportJob, JobRun, PortalSettings, StatusHistory, TrackedEntity, utcnow
from addon.options import (
    DEFAULT_TEMPLATES,
    IN_WORK,
    LOST,
    SYSTEM_CODES,
    TEMPLATE_KINDS,
    TEMPLATE_PLACEHOLDERS,
    Options,
)
from settings_ui.access import DEV_HOSTS, TOKEN_FIELD, TOKEN_HEADER, AccessDenied, PageTokens, PageUser, verify_user
from settings_ui.i18n import load_error, row_error, translator
from settings_ui.settings_form import field_label, parse_settings_form, settings_view, settings_view_from_form

PLACEMENT_ENTITIES = {"CRM_CONTACT_DETAIL_TAB": "contact", "CRM_COMPANY_DETAIL_TAB": "company"}
TABS = ("settings", "index", "import", "journal", "dashboard", "robots")
ADMIN_TABS = ("import", "journal")  # not shown to a manager
USERS_TTL = 300.0  # seconds the portal's user list is reused for pickers and names
UPLOAD_FORM_BYTES = 64 * 1024  # the upload's multipart framing and other fields, past the file itself


def page_clock() -> float:
    """Unix seconds that date page tokens when no clock is given (a browser test moves it)."""
    return time.time()


def make_blueprint(services, clock: Callable[[], float] | None = None) -> Blueprint:
    """The settings UI. `clock` (unix seconds) dates page tokens, so a test can age one."""
    clock = clock or (lambda: page_clock())  # looked up at each call, so it can be moved
    bp = Blueprint("settings_ui", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/ui/static")
    tokens = PageTokens(services.settings.secret_key, clock=clock)
    users_cache: dict[int, tuple[float, dict[int, str]]] = {}

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock(), dt.timezone.utc).replace(tzinfo=None)

    # --- access --------------------------------------------------------------------------------
    def page_user(admin: bool = False) -> PageUser:
        token = request.headers.get(TOKEN_HEADER) or request.form.get(TOKEN_FIELD)
        if not token and request.method == "GET":
            token = request.args.get(TOKEN_FIELD)  # downloads are plain links
        try:
            user = tokens.read(token)
        except AccessDenied:
            g.portal_domain = tokens.domain_of(token)  # "expired" is still said inside the portal's frame
            raise
        g.portal_domain = user.domain
        if admin and not user.is_admin:
            raise AccessDenied("not_admin")
        return user

    def opened_by(user: PageUser) -> PageUser:
        g.portal_domain = user.domain
        return user

    @bp.errorhandler(AccessDenied)
    def denied(exc: AccessDenied):
        if g.get("portal_domain") is None and request.form.get("member_id"):
            g.portal_domain = portal_domain(services, request.form["member_id"])  # the portal opened us
        lang = "en" if (request.args.get("LANG") or "").lower().startswith("en") else "ru"
        t = translator(lang)
        message = t(f"denied_{exc.reason}")
        if _wants_json():
            return jsonify({"error": exc.reason, "error_description": message}), 403
        return render_template("nezabyt/denied.html", t=t, lang=lang, message=message), 403

    @bp.after_request
    def framed_by_the_portal_only(response: Response) -> Response:
        # The pages live in the portal's iframe: framed by that portal's own address alone (as
        # Bitrix24's docs advise: frame-ancestors, no X-Frame-Options), never by another site
        # (clickjacking); a page that knows no portal is framed by none. Never leak the token.
        from addon.web import SECURITY_HEADERS

        response.headers.pop("X-Frame-Options", None)
        response.headers["Content-Security-Policy"] = f"frame-ancestors {frame_sources(g.get('portal_domain'))}"
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-store"
        return response

    # --- entry points from the portal ---------------------------------------------------------
    @bp.route("/app", methods=["POST", "GET"])
    def app_page():
        if request.method == "GET":
            raise AccessDenied("no_auth")
        user = opened_by(verify_user(services, request.form.get("member_id", ""), request.form.get("AUTH_ID", ""),
                                     request.args.get("LANG") or request.form.get("LANG")))
        return render_main(user, tokens.issue(user), "settings" if user.is_admin else "dashboard")

    @bp.post("/placement/<code>")
    def placement(code: str):
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
            ctx = _context(session, user.portal_id)
            row, history = _entity(session, user.portal_id, entity_type, entity_id)
            return render_template("nezabyt/card.html", t=t, user=user, token=tokens.issue(user), ctx=ctx,
                                   opts=ctx.opts, row=row, history=history, entity_type=entity_type,
                                   entity_id=entity_id, names=portal_users(user.portal_id, user.lang))

    # --- the page token ----------------------------------------------------------------------------
    @bp.post("/ui/token")
    def renew_token():
        """A fresh page token for a page whose own has expired: the portal's refreshed AUTH_ID
        (BX24.refreshAuth) is checked exactly as when the app is opened, so the form stays as it is."""
        user = verify_user(services, request.form.get("member_id", ""), request.form.get("AUTH_ID", ""),
                           request.form.get("LANG"))
        return jsonify({"token": tokens.issue(user)})

    @bp.post("/ui/token/check")
    def check_token():
        """Answers 403 with the reason when the page token no longer serves (before a form is sent)."""
        page_user()
        return jsonify({"ok": True})

    # --- the app page's own requests -----------------------------------------------------------
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
        return render_main(user, tokens.issue(user), tab if tab in TABS else "settings", **extra)

    @bp.post("/ui/robots/absences")
    def save_absences():
        """The admin's absence marks: every user shown on the form is marked absent or back."""
        from addon.robots.store import absent_users, mark_absent

        user = page_user(admin=True)
        t = translator(user.lang)
        shown = {parse_id(v) for v in request.form.getlist("shown")} - {None}
        absent = {parse_id(v) for v in request.form.getlist("absent")} - {None}
        if not absent <= shown:
            abort(400)
        with services.sessions() as session:
            for uid in sorted(shown):
                mark_absent(session, user.portal_id, uid, absent=uid in absent)
            session.commit()
            now_absent = sorted(absent_users(session, user.portal_id))
        names = portal_users(user.portal_id, user.lang)
        listed = ", ".join(names.get(u, f"#{u}") for u in now_absent) or t("nobody")
        return render_main(user, tokens.issue(user), "robots", flash=t("absent_saved", names=listed))

    @bp.post("/ui/settings")
    def save_settings():
        user = page_user(admin=True)
        t = translator(user.lang)
        data, errors = parse_settings_form(request.form, user.lang)
        if errors and _wants_json():  # the page's own save: the admin stays where they are
            return jsonify({"ok": False, "message": t("save_failed"), "errors": errors,
                            "labels": {k: field_label(k, request.form, t) for k in errors}}), 422
        if errors:
            return render_main(user, tokens.issue(user), "settings", form_errors=errors,
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
        if _wants_json():
            return jsonify({"ok": True, "message": t("saved", version=version), "warnings": warnings,
                            "codes": [st["code"] for st in data["statuses"]]})
        return render_main(user, tokens.issue(user), "settings", flash=t("saved", version=version),
                           warnings=warnings)

    @bp.post("/ui/settings/preview")
    def whatif():
        user = page_user(admin=True)
        t = translator(user.lang)
        data, errors = parse_settings_form(request.form, user.lang)
        if errors:
            return jsonify({"errors": errors, "labels": {k: field_label(k, request.form, t) for k in errors}}), 422
        options = Options.from_dict(data)
        with services.sessions() as session:
            ctx = _context(session, user.portal_id)
        today = ctx.today(now())
        from worker.reindex import preview_changes

        preview = whatif_view(preview_changes(services, user.portal_id, options, today))
        html = render_template("nezabyt/_whatif.html", t=t, p=preview, opts=options,
                               names=portal_users(user.portal_id, user.lang))
        return jsonify({"html": html})

    @bp.post("/ui/index")
    def start_index():
        user = page_user(admin=True)
        with services.sessions() as session:
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
        with services.sessions() as session:
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
        with services.sessions() as session:
            ctx = _context(session, user.portal_id)
            row, history = _entity(session, user.portal_id, entity_type, entity_id)
            if row is not None and not user.is_admin and row.assigned_by_id != user.user_id:
                row, history = None, []  # a manager looks up only their own clients
            html = render_template("nezabyt/_entity.html", t=t, opts=ctx.opts, row=row, history=history,
                                   entity_type=entity_type, entity_id=entity_id, names=portal_users(user.portal_id, user.lang))
        return jsonify({"html": html})

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
        with services.sessions() as session:
            ctx = _context(session, user.portal_id)
            entry = journal.entry(session, user.portal_id, run_id)
            if entry is None:
                abort(404)
            changes, total = journal.entry_changes(session, user.portal_id, run_id, manager_id=manager_id, state=state)
            html = render_template("nezabyt/_journal_entry.html", t=t, user=user, opts=ctx.opts, e=entry,
                                   changes=changes, total=total, manager=manager_id, state=state,
                                   names=portal_users(user.portal_id, user.lang), now_utc=now(),
                                   local_time=lambda v: _local_time(ctx, v))
        return jsonify({"html": html})

    @bp.post(f"/ui/journal/<int(max={MAX_ID}):run_id>/undo")
    def undo_entry(run_id: int):
        user = page_user(admin=True)
        t = translator(user.lang)
        with services.sessions() as session:
            try:
                undo_id = journal.queue_undo(session, user.portal_id, run_id, user.user_id, now())
            except journal.UndoRefused as exc:
                status = 404 if exc.reason == "not_found" else 409
                return jsonify({"error": exc.reason, "error_description": t("undo_refused_" + exc.reason)}), status
            session.commit()
        return jsonify({"run_id": undo_id})

    @bp.errorhandler(RequestEntityTooLarge)
    def upload_too_large(_exc):
        """An upload past the limit, refused before a byte of it is read: the import tab again with
        the limit named (the form's action carries the page token: the body is never parsed)."""
        limit = f"{services.settings.max_upload_bytes / (1024 * 1024):.3g}"
        try:
            user = tokens.read(request.args.get(TOKEN_FIELD))
        except AccessDenied:
            lang = "en" if (request.accept_languages.best_match(["ru", "en"]) == "en") else "ru"
            t = translator(lang)
            return render_template("nezabyt/denied.html", t=t, lang=lang, title=t("import_failed_title"),
                                   message=t("import_too_large", limit=limit)), 413
        t = translator(user.lang)
        return render_main(user, tokens.issue(user), "import", flash=t("import_too_large", limit=limit),
                           flash_kind="error"), 413

    @bp.post("/ui/import")
    def upload_import():
        from addon.bulkload.files import BulkLoadError, ImportLimits
        from addon.bulkload.staging import INLINE_MATCH_ROWS, prepare_import
        from addon.phones import phone_region_for
        from addon.bitrix.client import PortalError, portal_client

        # Before the form is read: a larger body is refused unread (413, upload_too_large).
        request.max_content_length = services.settings.max_upload_bytes + UPLOAD_FORM_BYTES
        user = page_user(admin=True)
        t = translator(user.lang)
        upload = request.files.get("file")
        entity_type = request.form.get("entity_type", "contact")
        if upload is None or not upload.filename:
            return render_main(user, tokens.issue(user), "import",
                               flash=t("import_no_file"), flash_kind="error"), 400
        content = upload.read()
        with services.sessions() as session:
            ctx = _context(session, user.portal_id)
            try:
                with portal_client(services, user.portal_id, web=True) as client:
                    staged = prepare_import(session, client, user.portal_id, upload.filename, content, ctx.opts,
                                            user.user_id, now(), ctx.today(now()), entity_type,
                                            phone_region_for(ctx.language), inline_match_rows=INLINE_MATCH_ROWS,
                                            limits=ImportLimits.of(services.settings))
            except (BulkLoadError, PortalError) as exc:
                session.rollback()
                return render_main(user, tokens.issue(user), "import",
                                   flash=t("import_failed", error=load_error(user.lang, str(exc))),
                                   flash_kind="error"), 400
            session.commit()
        return render_main(user, tokens.issue(user), "import", import_job_id=staged.job_id)

    @bp.post(f"/ui/import/<int(max={MAX_ID}):job_id>/apply")
    def apply_import_job(job_id: int):
        from addon.bulkload.staging import queue_import

        user = page_user(admin=True)
        with services.sessions() as session:
            job = session.get(ImportJob, job_id)
            if job is None or job.portal_id != user.portal_id:
                abort(404)
            if job.status == "matching":  # its rows are not matched to clients yet
                return jsonify({"error": "matching"}), 409
            run_id = queue_import(session, job, now())
            session.commit()
        return jsonify({"run_id": run_id})

    @bp.get(f"/ui/import/<int(max={MAX_ID}):job_id>/report.csv")
    def import_report(job_id: int):
        from addon.bulkload.report import report_csv

        user = page_user()
        with services.sessions() as lookup:
            opts = _context(lookup, user.portal_id).opts
        session = services.sessions()
        job = session.get(ImportJob, job_id)
        if job is None or job.portal_id != user.portal_id:
            session.close()
            abort(404)

        def rows():
            try:
                yield "\ufeff"  # Excel reads the Cyrillic right with a BOM
                yield from report_csv(session, job_id, error_text=lambda e: row_error(user.lang, e),
                                      status_name=opts.name_of)
            finally:
                session.close()

        return Response(stream_with_context(rows()), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="import-{job_id}-report.csv"'})

    @bp.get("/ui/import/template.<ext>")
    def import_template(ext: str):
        from addon.bulkload.report import template_csv, template_xlsx

        user = page_user()
        with services.sessions() as session:
            opts = _context(session, user.portal_id).opts
        if ext == "csv":
            return Response(template_csv(opts), mimetype="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="nezabyt-statuses.csv"'})
        if ext == "xlsx":
            return Response(template_xlsx(opts),
                            mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                            headers={"Content-Disposition": 'attachment; filename="nezabyt-statuses.xlsx"'})
        abort(404)

    # --- rendering -------------------------------------------------------------------------------
    def directory(portal_id: int) -> dict[int, Employee]:
        cached = users_cache.get(portal_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        users = fetch_users(services, portal_id)
        users_cache[portal_id] = (time.monotonic() + USERS_TTL, users)
        return users

    def portal_users(portal_id: int, lang: str = "ru") -> dict[int, str]:
        """{user ID: name} of every employee the portal knows (cached): a departed manager's clients
        are still named by who had them, marked «уволен»."""
        departed = translator(lang)("departed")
        return {uid: e.name if e.active else f"{e.name} ({departed})" for uid, e in directory(portal_id).items()}

    def active_users(portal_id: int) -> dict[int, str]:
        """The employees who can be picked (transfer, pool, absences): active ones only."""
        return {uid: e.name for uid, e in directory(portal_id).items() if e.active}

    def render_main(user: PageUser, token: str, tab: str, **extra: Any) -> str:
        from settings_ui.dashboard import build_dashboard, changes_chart, managers_chart

        t = translator(user.lang)
        with services.sessions() as session:
            ctx = _context(session, user.portal_id)
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
                from addon.bulkload.staging import preview_errors

                import_errors = preview_errors(session, import_job.id)
            recent_imports = list(session.scalars(select(ImportJob).where(ImportJob.portal_id == user.portal_id)
                                                  .order_by(ImportJob.id.desc()).limit(5)))
            last_index = session.scalars(select(JobRun).where(JobRun.portal_id == user.portal_id,
                                                              JobRun.kind == "reindex")
                                         .order_by(JobRun.id.desc())).first()
            robots = _robots_view(session, user.portal_id, ctx,
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
                worker_state=_worker_state(services, user), local_time=lambda v: _local_time(ctx, v), **extra)

    return bp


# --- helpers (no request state) --------------------------------------------------------------------
def _worker_state(services, user):
    """For an admin: what `nezabyt worker status` shows for this portal (worker.status)."""
    if not user.is_admin:
        return None
    from worker.status import portal_status

    rows = portal_status(services, [user.portal_id])
    return rows[0] if rows else None


def _local_time(ctx, value) -> str:
    """A stored naive-UTC instant in the portal's time zone, or a dash."""
    if value is None:
        return "—"
    return value.replace(tzinfo=dt.timezone.utc).astimezone(ctx.tz).strftime("%d.%m.%Y %H:%M:%S")


_DOMAIN = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def frame_sources(domain: str | None) -> str:
    """The frame-ancestors sources of a page of the portal at `domain`: its https address (and
    its http one for the local devportal), or 'none' when no portal is known or the stored
    domain is not a plain host[:port] (it would add sources of its own to the policy)."""
    if not domain or not _DOMAIN.fullmatch(domain):
        return "'none'"
    if domain.split(":")[0] in DEV_HOSTS:
        return f"http://{domain} https://{domain}"
    return f"https://{domain}"


def portal_domain(services, member_id: str) -> str | None:
    from addon.models import Portal

    with services.sessions() as session:
        return session.scalar(select(Portal.domain).where(Portal.member_id == member_id))


def _wants_json() -> bool:
    return request.headers.get(TOKEN_HEADER) is not None or request.accept_mimetypes.best == "application/json"


def _context(session, portal_id: int):
    from addon.engine import load_context

    return load_context(session, portal_id)


def _entity(session, portal_id: int, entity_type: str, entity_id: int):
    row = session.scalars(select(TrackedEntity).where(
        TrackedEntity.portal_id == portal_id, TrackedEntity.entity_type == entity_type,
        TrackedEntity.entity_id == entity_id)).first()
    history = list(session.scalars(select(StatusHistory).where(
        StatusHistory.portal_id == portal_id, StatusHistory.entity_type == entity_type,
        StatusHistory.entity_id == entity_id).order_by(StatusHistory.id.desc()).limit(200)))
    return row, history


def _robots_view(session, portal_id: int, ctx, month: str) -> dict[str, Any]:
    """The robots tab: who is marked absent, the month's ranking, the close reasons."""
    from addon.robots.store import absent_users, close_reason_counts, ranking_report

    return {"catalog": robot_catalog(ctx.opts.language if ctx.opts.language in ("ru", "en") else "ru"),
            "absent": absent_users(session, portal_id), "month": month,
            "ranking": ranking_report(session, portal_id, month, ctx.tz),  # best first
            "reasons": close_reason_counts(session, portal_id)}


@dataclass(frozen=True)
class Employee:
    name: str
    active: bool = True


def robot_catalog(lang: str) -> list[dict[str, Any]]:
    """Every pipeline robot Nezabyt registers (addon.robots.catalog): its name, what it does and
    the settings the admin fills in when adding it to a pipeline's automation rules."""
    from addon.robots.registry import ROBOTS

    return [{"key": r.key, "name": r.name.get(lang) or r.name["ru"],
             "description": r.description.get(lang) or r.description["ru"],
             "settings": [p["Name"].get(lang) or p["Name"]["ru"] for p in r.properties.values()]}
            for r in ROBOTS]


def block_notice(session, portal_id: int, ctx) -> str | None:
    """When Bitrix24 blocked the portal's REST API (OVERLOAD_LIMIT): the local time of the next probe."""
    from addon.bitrix.client import blocked_until

    until = blocked_until(session, portal_id)
    return ctx.local(dt.datetime.fromtimestamp(until, dt.timezone.utc).replace(tzinfo=None)).strftime("%d.%m %H:%M") \
        if until else None


def fetch_users(services, portal_id: int) -> dict[int, Employee]:
    """Every employee from `user.get` (without an ACTIVE filter it lists departed ones too, the
    first 5,000); an unreachable portal gives no names."""
    from addon.bitrix import directory
    from addon.bitrix.client import PortalError, portal_client

    users: dict[int, Employee] = {}
    try:
        with portal_client(services, portal_id, web=True) as client:
            for u in directory.users(client, limit=5000):
                name = directory.full_name(u)
                users[int(u["ID"])] = Employee(name, u.get("ACTIVE") not in (False, "N", "false", 0, "0"))
    except PortalError:
        return {}
    return users


def whatif_view(preview: dict[str, Any]) -> dict[str, Any]:
    """worker.reindex.preview_changes' answer, shaped for the template (largest groups first)."""
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
        from worker.reindex import redate

        redate(services, portal_id)
    except Exception as exc:  # shown to the admin: the dates follow at the next re-index
        warnings.append(t("warn_redate", error=str(exc)[:300]))
    try:
        from install.manifest import sync_status_fields

        sync_status_fields(services, portal_id)
    except Exception as exc:  # shown to the admin: the list follows at the next save or update
        warnings.append(t("warn_sync", error=str(exc)[:300]))
    return warnings
