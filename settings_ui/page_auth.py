"""Who is asking, on every page request: the page user from the page token, the denied page, and
the frame headers that keep the pages inside their own portal."""
from __future__ import annotations

import re

from flask import Response, g, jsonify, render_template, request
from sqlalchemy import select

from addon.http_headers import SECURITY_HEADERS
from addon.models import Portal
from settings_ui.access import DEV_HOSTS, TOKEN_FIELD, TOKEN_HEADER, AccessDenied, PageUser
from settings_ui.blueprint import bp, pages
from settings_ui.i18n import translator

_DOMAIN = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def page_user(admin: bool = False) -> PageUser:
    """The user the request's page token names (header, form field, or a download link's query)."""
    tokens = pages().tokens
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
    """The user the portal confirmed when it opened a page: the answer is framed by their portal."""
    g.portal_domain = user.domain
    return user


@bp.errorhandler(AccessDenied)
def denied(exc: AccessDenied):
    if g.get("portal_domain") is None and request.form.get("member_id"):
        g.portal_domain = portal_domain(pages().services, request.form["member_id"])  # the portal opened us
    lang = "en" if (request.args.get("LANG") or "").lower().startswith("en") else "ru"
    t = translator(lang)
    message = t(f"denied_{exc.reason}")
    if wants_json():
        return jsonify({"error": exc.reason, "error_description": message}), 403
    return render_template("nezabyt/denied.html", t=t, lang=lang, message=message), 403


@bp.after_request
def framed_by_the_portal_only(response: Response) -> Response:
    # The pages live in the portal's iframe: framed by that portal's own address alone (as
    # Bitrix24's docs advise: frame-ancestors, no X-Frame-Options), never by another site
    # (clickjacking); a page that knows no portal is framed by none. Never leak the token.
    response.headers.pop("X-Frame-Options", None)
    response.headers["Content-Security-Policy"] = f"frame-ancestors {frame_sources(g.get('portal_domain'))}"
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


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
    with services.sessions() as session:
        return session.scalar(select(Portal.domain).where(Portal.member_id == member_id))


def wants_json() -> bool:
    return request.headers.get(TOKEN_HEADER) is not None or request.accept_mimetypes.best == "application/json"
