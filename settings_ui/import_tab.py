"""The import tab's requests: a status file's upload (staged and previewed), applying a staged
job, its report, the blank templates, and the answer to an upload over the size limit."""
from __future__ import annotations

from flask import Response, abort, jsonify, render_template, request, stream_with_context
from werkzeug.exceptions import RequestEntityTooLarge

from addon.bulkload import files, report, staging
from addon.bitrix.client import portal_client
from addon.bitrix.errors import PortalError
from addon.engine import load_context
from addon.ids import MAX_ID
from addon.models import ImportJob
from addon.phones import phone_region_for
from settings_ui.access import TOKEN_FIELD, AccessDenied
from settings_ui.blueprint import bp, now, pages
from settings_ui.i18n import load_error, row_error, translator
from settings_ui.main_page import render_main
from settings_ui.page_auth import page_user

UPLOAD_FORM_BYTES = 64 * 1024  # the upload's multipart framing and other fields, past the file itself


@bp.errorhandler(RequestEntityTooLarge)
def upload_too_large(_exc):
    """An upload past the limit, refused before a byte of it is read: the import tab again with
    the limit named (the form's action carries the page token: the body is never parsed)."""
    state = pages()
    limit = f"{state.services.settings.max_upload_bytes / (1024 * 1024):.3g}"
    try:
        user = state.tokens.read(request.args.get(TOKEN_FIELD))
    except AccessDenied:
        lang = "en" if (request.accept_languages.best_match(["ru", "en"]) == "en") else "ru"
        t = translator(lang)
        return render_template("nezabyt/denied.html", t=t, lang=lang, title=t("import_failed_title"),
                               message=t("import_too_large", limit=limit)), 413
    t = translator(user.lang)
    return render_main(user, state.tokens.issue(user), "import", flash=t("import_too_large", limit=limit),
                       flash_kind="error"), 413


@bp.post("/ui/import")
def upload_import():
    services, tokens = pages().services, pages().tokens
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
        ctx = load_context(session, user.portal_id)
        try:
            with portal_client(services, user.portal_id, web=True) as client:
                staged = staging.prepare_import(
                    session, client, user.portal_id, upload.filename, content, ctx.opts, user.user_id, now(),
                    ctx.today(now()), entity_type, phone_region_for(ctx.language),
                    inline_match_rows=staging.INLINE_MATCH_ROWS, limits=files.ImportLimits.of(services.settings))
        except (files.BulkLoadError, PortalError) as exc:
            session.rollback()
            return render_main(user, tokens.issue(user), "import",
                               flash=t("import_failed", error=load_error(user.lang, str(exc))),
                               flash_kind="error"), 400
        session.commit()
    return render_main(user, tokens.issue(user), "import", import_job_id=staged.job_id)


@bp.post(f"/ui/import/<int(max={MAX_ID}):job_id>/apply")
def apply_import_job(job_id: int):
    user = page_user(admin=True)
    with pages().services.sessions() as session:
        job = session.get(ImportJob, job_id)
        if job is None or job.portal_id != user.portal_id:
            abort(404)
        if job.status == "matching":  # its rows are not matched to clients yet
            return jsonify({"error": "matching"}), 409
        run_id = staging.queue_import(session, job, now())
        session.commit()
    return jsonify({"run_id": run_id})


@bp.get(f"/ui/import/<int(max={MAX_ID}):job_id>/report.csv")
def import_report(job_id: int):
    services = pages().services
    user = page_user()
    with services.sessions() as lookup:
        opts = load_context(lookup, user.portal_id).opts
    session = services.sessions()
    job = session.get(ImportJob, job_id)
    if job is None or job.portal_id != user.portal_id:
        session.close()
        abort(404)

    def rows():
        try:
            yield "\ufeff"  # Excel reads the Cyrillic right with a BOM
            yield from report.report_csv(session, job_id, error_text=lambda e: row_error(user.lang, e),
                                           status_name=opts.name_of)
        finally:
            session.close()

    return Response(stream_with_context(rows()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="import-{job_id}-report.csv"'})


@bp.get("/ui/import/template.<ext>")
def import_template(ext: str):
    user = page_user()
    with pages().services.sessions() as session:
        opts = load_context(session, user.portal_id).opts
    if ext == "csv":
        return Response(report.template_csv(opts), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="nezabyt-statuses.csv"'})
    if ext == "xlsx":
        return Response(report.template_xlsx(opts),
                        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={"Content-Disposition": 'attachment; filename="nezabyt-statuses.xlsx"'})
    abort(404)
