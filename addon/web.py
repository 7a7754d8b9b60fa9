"""The Flask app factory (`create_app`) and the receivers the portal talks to: /install, /events,
/robots/<code>, /healthz. Views are thin: parse, hand over, commit, answer."""
from __future__ import annotations

import html
import importlib.util
import io
import json
import logging
import re
from urllib.parse import parse_qsl

import click
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import text
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from addon.bitrix.errors import PortalError
from addon.bitrix.pace import shared_pace
from addon.http_headers import SECURITY_HEADERS
from addon.intake import EventIntake, parse_php_form

log = logging.getLogger(__name__)


def create_app(services=None) -> Flask:
    """The web app. With no services it builds them from the environment (gunicorn:
    `gunicorn 'addon.web:create_app()'`)."""
    from addon.logs import configure_logging

    configure_logging()
    if services is None:
        from addon.services import build_services

        services = build_services()
    app = Flask("nezabyt")
    app.config["SECRET_KEY"] = services.settings.secret_key
    app.session_interface = _SessionsOutsideReceivers()
    app.extensions["nezabyt"] = services
    # One per app, so per process: it keeps what verification may reuse between events.
    intake = app.extensions["nezabyt.intake"] = EventIntake(
        services.intake_engine, services.cipher, pace_for=lambda portal_id: shared_pace(services, portal_id))
    app.wsgi_app = _EventsFirst(app.wsgi_app, services, intake)  # Flask's middleware slot
    app.register_blueprint(_receivers())
    app.register_error_handler(PortalError, _portal_trouble)
    app.after_request(_security_headers)
    if _module_exists("settings_ui.pages"):
        from settings_ui.pages import register_pages

        register_pages(app, services)
    return app


class _SessionsOutsideReceivers(SecureCookieSessionInterface):
    """Flask opens the signed session cookie on every request, building its signer each time
    (about 7% of an event's CPU in the worker). The portal's receivers never use a session: they get
    Flask's null session; every other page keeps the usual one."""

    def open_session(self, app, request):
        if request.path == "/events" or request.path.startswith("/robots/"):
            return None  # Flask substitutes its NullSession and saves nothing
        return super().open_session(app, request)


# ASCII digits, as many as a length can have ("١٢".isdigit() is True; int() of 5,000 digits raises).
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")


class _EventsFirst:
    """POST /events with a form body, answered before Flask: the portal's event deliveries are the
    app's hot path (issue 7: 1,000 events/s), and Flask's request context, routing, form parsing and
    jsonify cost about 0.3 ms of CPU per event, as much again as storing it. Same answers as the
    Flask route (both call `event_answer`); anything else — other paths, other bodies, a body
    without a length, the install and uninstall events — goes on to Flask."""

    def __init__(self, app, services, intake):
        self.app, self.services, self.intake = app, services, intake

    def __call__(self, environ, start_response):
        if (environ.get("PATH_INFO") != "/events" or environ.get("REQUEST_METHOD") != "POST"
                or environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
                != "application/x-www-form-urlencoded"
                or not _CONTENT_LENGTH.fullmatch(str(environ.get("CONTENT_LENGTH") or ""))):
            return self.app(environ, start_response)
        length, limit = int(environ["CONTENT_LENGTH"]), self.services.settings.max_event_body
        if length > limit:
            return _json_answer(start_response, 413, _refusal_body(413, f"body over {limit} bytes"))
        body = environ["wsgi.input"].read(length)
        try:
            form = parse_php_form(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        except ValueError as exc:
            return _json_answer(start_response, 400, _refusal_body(400, str(exc)))
        if str(form.get("event") or "").upper() in ("ONAPPINSTALL", "ONAPPUPDATE", "ONAPPUNINSTALL"):
            environ["wsgi.input"] = io.BytesIO(body)  # read once here: Flask reads it again
            return self.app(environ, start_response)
        status, answer = event_answer(self.services, self.intake, form)
        return _json_answer(start_response, status, answer)


def _json_answer(start_response, status: int, answer: dict) -> list[bytes]:
    body = json.dumps(answer).encode()
    start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *SECURITY_HEADERS])
    return [body]


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS:
        response.headers.setdefault(name, value)
    return response


def event_answer(services, intake, form: dict) -> tuple[int, dict]:
    """The answer to a parsed event form: (HTTP status, JSON body)."""
    from addon.intake import IntakeError

    name = str(form.get("event") or "").upper()
    try:
        if name == "ONAPPUNINSTALL":
            from install.uninstall import handle_uninstall

            handle_uninstall(services, form)
            return 200, {"status": "uninstalled"}
        if name in ("ONAPPINSTALL", "ONAPPUPDATE"):
            from install.claim import InstallError
            from install.installer import handle_app_install

            try:
                return 200, {"status": "installed", "portal": handle_app_install(services, form)}
            except InstallError as exc:
                return exc.status, _refusal_body(exc.status, exc.message)
        stored = intake.store_event(form)
    except IntakeError as exc:
        return exc.status, _refusal_body(exc.status, exc.message)
    except PortalError as exc:
        log.warning("portal error on %s: %s", name or "an event", exc)
        return portal_trouble_answer(exc)
    return 200, {"status": "duplicate" if stored.duplicate else "stored", "id": stored.event_id}


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def portal_trouble_answer(exc: PortalError) -> tuple[int, dict]:
    """No route answers 500 for a portal's trouble: a busy, rate-limited or blocked portal is 503
    ("try again", nothing was changed), a refusal of another kind 502 with the portal's code."""
    from addon.bitrix.errors import is_temporary

    if is_temporary(exc):
        return 503, {"error": "portal_busy", "portal_error": exc.code,
                     "error_description": f"Bitrix24 is busy ({exc.code}): nothing was changed, try again in a minute."}
    return 502, {"error": "portal_error", "portal_error": exc.code,
                 "error_description": f"Bitrix24 refused the request: {exc.code} {exc.description}".strip()}


def _portal_trouble(exc: PortalError):
    """The app-wide handler: JSON for the portal's receivers and API calls, a short page otherwise."""
    from addon.bitrix.errors import BLOCKED

    status, answer = portal_trouble_answer(exc)
    log.warning("portal error on %s %s: %s", request.method, request.path, exc)
    if request.path in ("/events", "/install") or request.path.startswith("/robots/") or request.is_json:
        response = jsonify(answer)
    else:
        text_ru = ("Битрикс24 сейчас занят: ничего не изменено, попробуйте ещё раз через минуту."
                   if status == 503 else "Битрикс24 отказал в запросе.")
        response = Response(f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Nezabyt</title></head>"
                            f"<body><p>{html.escape(text_ru)}</p><p>{html.escape(answer['error_description'])}</p>"
                            f"</body></html>", mimetype="text/html")
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = "3600" if exc.kind == BLOCKED else "30"
    return response


def services_of(app: Flask | None = None):
    return (app or current_app).extensions["nezabyt"]


def _form_pairs() -> list[tuple[str, str]]:
    """The body's fields, refusing a body over the event limit before reading it (413)."""
    request.max_content_length = services_of().settings.max_event_body
    return list(request.form.items(multi=True))


def _refusal_body(status: int, message: str) -> dict:
    return {"error": {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                      413: "too_large"}.get(status, "error"),
            "error_description": message}


def _refusal(status: int, message: str) -> Response:
    response = jsonify(_refusal_body(status, message))
    response.status_code = status
    return response


def _receivers() -> Blueprint:
    from addon.intake import IntakeError

    bp = Blueprint("receivers", __name__)

    def _intake():
        return current_app.extensions["nezabyt.intake"]

    @bp.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc):
        return _refusal(413, f"body over {services_of().settings.max_event_body} bytes")

    @bp.get("/healthz")
    def healthz():
        services = services_of()
        try:
            with services.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # the probe reports, it does not crash
            return jsonify({"status": "error", "database": str(exc)[:200]}), 503
        return jsonify({"status": "ok"})

    @bp.post("/events")
    def events():
        """Events that _EventsFirst hands on: install and uninstall, other body encodings."""
        try:
            form = parse_php_form(_form_pairs())
        except ValueError as exc:
            return _refusal(400, str(exc))
        status, answer = event_answer(services_of(), _intake(), form)
        return jsonify(answer), status

    @bp.post("/robots/<code>")
    def robots(code: str):
        try:
            form = parse_php_form(_form_pairs())
        except ValueError as exc:
            return _refusal(400, str(exc))
        try:
            stored = _intake().store_robot_call(code, form)
        except IntakeError as exc:
            return _refusal(exc.status, exc.message)
        return jsonify({"status": "duplicate" if stored.duplicate else "stored", "id": stored.event_id})

    @bp.post("/install")
    def install():
        from install.claim import InstallError
        from install.installer import handle_app_install, install_from_page
        from install.pages import install_failure_page

        services = services_of()
        try:
            form = parse_php_form(_form_pairs())
        except ValueError as exc:
            return _refusal(400, str(exc))
        try:
            if str(form.get("event") or "").upper() in ("ONAPPINSTALL", "ONAPPUPDATE"):
                portal_id = handle_app_install(services, form)
                return jsonify({"status": "installed", "portal": portal_id})
        except (InstallError, IntakeError) as exc:
            return _refusal(exc.status, exc.message)
        # The installer page is read by the admin in the portal's frame (a browser asks for HTML):
        # its failures are a page there; a caller that does not ask for HTML gets the JSON.
        page = request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"
        try:
            outcome = install_from_page(services, request.args.to_dict(), form)
        except (InstallError, IntakeError) as exc:
            if not page:
                return _refusal(exc.status, exc.message)
            return Response(install_failure_page(exc.status, exc.message), status=exc.status, mimetype="text/html")
        except PortalError as exc:
            if not page:
                raise
            status, answer = portal_trouble_answer(exc)
            return Response(install_failure_page(status, answer["error_description"]), status=status,
                            mimetype="text/html")
        return Response(outcome.html, mimetype="text/html")

    return bp


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def web_command(host: str, port: int) -> None:
    """Run the web app with werkzeug (development; production runs gunicorn)."""
    from werkzeug.serving import run_simple

    run_simple(host, port, create_app(), threaded=True, use_reloader=False)
