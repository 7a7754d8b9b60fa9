"""Installation: the installer page a portal opens (POST /install), ONAPPINSTALL and ONAPPUPDATE.

An install arrives unauthenticated, so nothing it claims is believed: the portal must be an https
address that resolves to public addresses only (install/address.py), Bitrix24's authorization
server must confirm the claimed token is this app's on the claimed portal, and the portal must say
the installing user is an admin, before anything is stored; a known member_id arriving from
a new domain is the same portal at its new address once the authorization server confirms both. Then the portal and its default settings are stored and the
registration manifest applied, as one unit: a failed manifest puts the portal back as it was.

A UI install reaches us twice (the installer page, then ONAPPINSTALL once BX24.installFinish()
runs) and an update up to three times (ONAPPUPDATE, the installer page, ONAPPINSTALL): the
manifest is applied once per app version (install.manifest.ensure_manifest), so the later
arrivals cost the proof and one event.get. An update keeps the tokens, drops the handlers and
robots and brings a new application_token (api-reference/common/events/on-app-update.md).
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from addon.db import unit_of_work
from addon.models import PORTAL_ACTIVE, PORTAL_INSTALLING, PORTAL_UNINSTALLED, Portal, PortalSettings
from addon.bitrix.client import user_client
from addon.bitrix.errors import PortalError, is_temporary
from addon.bitrix.pace import shared_pace
from addon.bitrix.scope import scope_text
from addon.bitrix.tokens import mark_active, save_application_token, save_tokens, token_app_info, unix_to_utc
from addon.options import Options, parse_time_zone
from install.address import PortalAddressRefused, check_portal_address
from install.manifest import ManifestIncomplete, ensure_manifest, utc_offset_name

log = logging.getLogger(__name__)


class InstallError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class InstallOutcome:
    portal_id: int
    created: bool
    html: str
    manifest: object | None = None


@dataclass
class Claim:
    """What an install claims: whose portal, where, with which tokens."""

    member_id: str
    domain: str
    client_endpoint: str
    server_endpoint: str
    access_token: str
    refresh_token: str | None
    expires_in: int
    application_token: str | None
    scope: str
    language: str
    app_version: str | None = None
    event: str = "page"


def _need(source: dict, key: str) -> str:
    value = source.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InstallError(400, f"missing {key}")
    return value.strip()


def _valid_domain(domain: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?", domain):
        raise InstallError(400, "bad DOMAIN")
    return domain.lower()


def install_from_page(services, query: dict, form: dict) -> InstallOutcome:
    """POST /install from the portal's installer page (a UI app)."""
    domain = _valid_domain(str(query.get("DOMAIN") or form.get("DOMAIN") or ""))
    protocol = str(query.get("PROTOCOL") or form.get("PROTOCOL") or "1")
    claim = Claim(
        member_id=_need(form, "member_id").lower(),
        domain=domain,
        client_endpoint=f"{'https' if protocol == '1' else 'http'}://{domain}/rest/",
        server_endpoint=_need(form, "SERVER_ENDPOINT"),
        access_token=_need(form, "AUTH_ID"),
        refresh_token=_need(form, "REFRESH_ID"),
        expires_in=_int(form.get("AUTH_EXPIRES"), 3600),
        application_token=(form.get("APPLICATION_TOKEN") or None),
        scope=scope_text(form.get("APPLICATION_SCOPE")),
        language=str(query.get("LANG") or form.get("LANG") or "ru")[:8],
    )
    outcome = _install(services, claim)
    outcome.html = installer_page(domain, services.settings.public_url, outcome)
    return outcome


APP_EVENTS = ("ONAPPINSTALL", "ONAPPUPDATE")


def handle_app_install(services, form: dict) -> int:
    """ONAPPINSTALL (an API-only install, or the event a UI install bound) or ONAPPUPDATE: prove
    the claim, store the tokens and the new application_token, apply the manifest if this version
    does not have it yet."""
    event = str(form.get("event") or "").upper()
    auth = form.get("auth")
    if not isinstance(auth, dict):
        raise InstallError(400, "missing auth[...]")
    client_endpoint = _need(auth, "client_endpoint")
    parts = urlsplit(client_endpoint)
    domain = _valid_domain(str(auth.get("domain") or parts.netloc))
    if parts.netloc.lower() != domain or parts.scheme not in ("http", "https"):
        raise InstallError(400, "auth[client_endpoint] is not on auth[domain]")
    data = form.get("data") if isinstance(form.get("data"), dict) else {}
    version = str(data.get("VERSION") or "").strip()[:32] or None
    claim = Claim(
        member_id=_need(auth, "member_id").lower(),
        domain=domain,
        client_endpoint=f"{parts.scheme}://{domain}/rest/",
        server_endpoint=_need(auth, "server_endpoint"),
        access_token=_need(auth, "access_token"),
        refresh_token=(auth.get("refresh_token") or None),
        expires_in=_int(auth.get("expires_in"), 3600),
        application_token=_need(auth, "application_token"),
        scope=scope_text(auth.get("scope")),
        language=str(data.get("LANGUAGE_ID") or "ru")[:8],
        app_version=version,
        event=event if event in APP_EVENTS else "ONAPPINSTALL",
    )
    return _install(services, claim).portal_id


def _install(services, claim: Claim) -> InstallOutcome:
    settings = services.settings
    _check_address(settings, claim)
    with services.sessions() as session:
        known = session.scalar(select(Portal).where(Portal.member_id == claim.member_id))
        known_id = known.id if known is not None else None
        moved_from = known.domain.lower() if known is not None and known.domain.lower() != claim.domain else None
    # A known portal's proof draws on its one budget, shared with the worker's daily run.
    proof = _prove(settings, claim, shared_pace(services, known_id) if known_id is not None else None)
    if moved_from is not None:
        # The authorization server has just confirmed this member_id at the claimed domain: the
        # portal changed its address (settings/how-to-call-rest-api/change-domen.md), and every
        # later call goes to the new one.
        log.info("portal %s moved from %s to %s", known_id, moved_from, claim.domain)
    portal_id, created, before = _store(services, claim, proof)
    # The manifest needs the stored tokens (its client reads them), so the portal row is committed
    # first and put back as it was when the manifest fails: a failed install leaves nothing half-done.
    try:
        report = ensure_manifest(services, portal_id, claim.app_version)
    except Exception as exc:
        # An update's tokens and application_token are the portal's current ones: they stay.
        _undo(services, portal_id, created, before, keep=TOKEN_COLUMNS if claim.event == "ONAPPUPDATE" else ())
        if isinstance(exc, PortalError) and is_temporary(exc):
            log.warning("install of %s undone: the portal was busy at %s: %s", claim.domain, exc.method, exc.code)
            raise InstallError(503, BUSY) from exc
        if isinstance(exc, PortalError):
            log.warning("install of %s undone: the manifest failed at %s: %s", claim.domain, exc.method, exc.code)
            raise InstallError(502, "the portal did not answer as expected while the app was set up; nothing "
                                    "was changed: try the install again") from exc
        if isinstance(exc, ManifestIncomplete):
            log.warning("install of %s undone: %s", claim.domain, exc)
            raise InstallError(502, "the portal did not keep what the app registered; nothing was changed: "
                                    "try the install again") from exc
        log.exception("install of %s undone: the manifest failed", claim.domain)
        raise InstallError(500, "the app could not be set up on the portal; nothing was changed: "
                                "try the install again") from exc
    with unit_of_work(services.sessions) as session:
        portal = session.get(Portal, portal_id, with_for_update=True)
        mark_active(portal)
    return InstallOutcome(portal_id, created, "", report)


def _store(services, claim: Claim, proof: dict) -> tuple[int, bool, dict | None]:
    """Store the proven claim: (portal id, created?, the known portal's columns before)."""
    created = False
    with unit_of_work(services.sessions) as session:
        portal = session.scalar(select(Portal).where(Portal.member_id == claim.member_id).with_for_update())
        before = None if portal is None else _columns(portal)
        if portal is None:
            created = True
            portal = Portal(member_id=claim.member_id, domain=claim.domain, client_endpoint=claim.client_endpoint,
                            server_endpoint=claim.server_endpoint, parked_methods={})
            session.add(portal)
        portal.domain = claim.domain  # a known portal's may be new: proven by the authorization server
        portal.client_endpoint = claim.client_endpoint
        portal.server_endpoint = claim.server_endpoint  # kept for the record; refreshes go to settings.oauth_url
        save_tokens(session, portal, claim.access_token, claim.refresh_token,
                    unix_to_utc(time.time() + claim.expires_in))
        if claim.application_token:
            save_application_token(session, portal, claim.application_token)
        elif portal.status == PORTAL_UNINSTALLED:
            # A new installation gets a new application_token; it comes with its first event.
            portal.application_token_enc = None
        portal.scope = claim.scope or proof["scope"] or portal.scope or ""
        if claim.app_version:
            portal.app_version = claim.app_version
        portal.language = claim.language or portal.language
        if proof["user_id"]:
            portal.installed_by_user_id = proof["user_id"]
        if proof["time_zone"]:
            portal.time_zone = proof["time_zone"]
        if proof["server_time"] is not None:
            # Reconcile starts from the install, by the portal's clock (its DATE_MODIFY's clock).
            portal.entity_watermark = portal.entity_watermark or proof["server_time"]
            portal.activity_watermark = portal.activity_watermark or proof["server_time"]
        if created or portal.uninstalled_at is not None:
            portal.installed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        portal.uninstalled_at = None
        if portal.status != PORTAL_ACTIVE:
            # Not active until the manifest is applied: the worker leaves a portal being set up alone.
            portal.status = PORTAL_INSTALLING
            portal.status_reason = "the app is being set up on the portal"
        session.flush()
        if session.get(PortalSettings, portal.id) is None:
            language = claim.language if claim.language in ("ru", "en") else "ru"
            options = Options(time_zone=portal.time_zone or "UTC", language=language)
            # A new portal has no rows yet: nothing is dated under older options.
            session.add(PortalSettings(portal_id=portal.id, version=1, dated_version=1, data=options.to_dict(),
                                       field_items={}))
        return portal.id, created, before


def _columns(portal: Portal) -> dict:
    return {attr.key: getattr(portal, attr.key) for attr in sa_inspect(Portal).column_attrs if attr.key != "id"}


TOKEN_COLUMNS = ("access_token_enc", "refresh_token_enc", "expires_at", "application_token_enc")


def _undo(services, portal_id: int, created: bool, before: dict | None, keep: tuple[str, ...] = ()) -> None:
    """Put the portal back as it was before the install: a new one removed with all it got, a
    known one with its previous tokens, endpoints and status (what the manifest learnt about the
    portal's fields stays: it is what the portal now has)."""
    from install.uninstall import purge_portal

    with unit_of_work(services.sessions) as session:
        portal = session.get(Portal, portal_id, with_for_update=True)
        if portal is None:
            return
        if created or before is None:
            purge_portal(session, portal_id)
            return
        for key, value in before.items():
            if key not in keep:
                setattr(portal, key, value)


def _check_address(settings, claim: Claim) -> None:
    """No request of ours goes to a private, loopback or link-local address or over plain http
    (unless the settings allow the local devportal)."""
    parts = urlsplit(claim.client_endpoint)
    try:
        check_portal_address(parts.scheme, parts.hostname or "", parts.port, settings.allow_private_portals)
    except PortalAddressRefused as exc:
        log.warning("install claim for %s refused: %s", claim.domain, exc.reason)
        raise InstallError(400, "the portal's address is not allowed: a Bitrix24 portal is reached over https "
                                "at a public address") from exc
    except ValueError as exc:  # a port out of range
        raise InstallError(400, "bad DOMAIN") from exc


NOT_CONFIRMED = "the portal did not confirm the install: open the app from the portal and try again"
BUSY = "the portal is busy right now; nothing was changed: try the install again in a minute"


def _prove(settings, claim: Claim, pace=None) -> dict:
    """The authorization server (settings.oauth_url, Bitrix24's own) must say the claimed token is
    this app's (our client_id) on the claimed portal (member_id, domain); only then is the portal
    itself asked: the user must be an admin. Also reads the granted scope and the portal's UTC
    offset for the default time zone. Refusals answer one text, whatever the claimed host did."""
    if not settings.client_id:
        raise InstallError(503, "the app has no NEZABYT_CLIENT_ID: installs cannot be confirmed")
    info = _authorization_server_app_info(settings, claim)
    install = info.get("install") if isinstance(info.get("install"), dict) else {}
    mismatch = [name for name, ours, theirs in (
        ("client_id", settings.client_id, info.get("client_id")),
        ("member_id", claim.member_id, str(install.get("member_id") or "").lower()),
        ("domain", claim.domain, str(install.get("domain") or "").lower())) if ours != theirs]
    if mismatch:
        log.warning("install claim for %s refused: the authorization server's %s differ", claim.domain,
                    "/".join(mismatch))
        raise InstallError(401, NOT_CONFIRMED)
    client = user_client(claim.client_endpoint, claim.access_token, pace=pace)
    try:
        profile = client.call("profile") or {}
    except PortalError as exc:
        if is_temporary(exc):  # the rate limit or a 5xx outlasted the web request's deadline
            log.warning("install of %s: the portal is busy (%s)", claim.domain, exc.code or exc.http_status)
            raise InstallError(503, BUSY) from exc
        log.warning("install claim for %s refused: profile answered %s", claim.domain, exc.code or exc.http_status)
        raise InstallError(401, NOT_CONFIRMED) from exc
    if not isinstance(profile, dict) or not _truthy(profile.get("ADMIN")):
        raise InstallError(403, "only a portal administrator can install the app")
    scope = scope_text(claim.scope or info.get("scope") or install.get("scope"))
    if not scope:
        try:
            scope = scope_text(client.call("scope"))
        except PortalError:
            scope = ""
    # The installing admin's zone name (profile.TIME_ZONE, api-reference/common/users/profile.md)
    # keeps the digest at its hour across DST; without one, the portal's UTC offset (server.time).
    time_zone, server_time = zone_name(profile.get("TIME_ZONE")), None
    if time_zone is None:
        try:
            answer = client.call("server.time")
            time_zone = utc_offset_name(answer)
            server_time = dt.datetime.fromisoformat(answer).astimezone(dt.timezone.utc).replace(tzinfo=None)
        except (PortalError, TypeError, ValueError):
            pass
    return {"scope": scope, "user_id": _int(profile.get("ID"), 0) or None, "time_zone": time_zone,
            "server_time": server_time}


def zone_name(value) -> str | None:
    """A time zone name the portal gave ("Europe/Berlin"), if it is one we know."""
    name = str(value or "").strip()
    if not name or "/" not in name or parse_time_zone(name) is None:
        return None
    return name


def _authorization_server_app_info(settings, claim: Claim) -> dict:
    try:
        return token_app_info(settings, claim.access_token)
    except PortalError as exc:
        log.warning("install claim for %s not confirmed by the authorization server: %s %s", claim.domain,
                    exc.http_status, exc.code[:64])
        if exc.code == "NETWORK_ERROR" or (exc.http_status or 0) >= 500:
            raise InstallError(503, "the Bitrix24 authorization server did not answer: try the install again") from exc
        raise InstallError(401, NOT_CONFIRMED) from exc


def bx24_script_url(domain: str) -> str:
    """The devportal serves its BX24.js shim itself; real portals load Bitrix24's."""
    host = domain.split(":")[0]
    if host in ("127.0.0.1", "localhost") or host.endswith(".localhost") or host.endswith(".test"):
        return f"//{domain}/bx24.js"
    return "//api.bitrix24.com/api/v1/"


_PAGE_STYLE = """
body { margin: 0; padding: 24px 16px; background: #eef2f4; color: #525c69;
  font: 14px/1.5 "Open Sans", "Helvetica Neue", Arial, sans-serif; }
.card { max-width: 720px; margin: 0 auto; background: #fff; border-radius: 12px; padding: 22px 24px; }
h1 { font-size: 22px; font-weight: 400; margin: 0 0 8px; color: #333; }
h2 { font-size: 15px; font-weight: 600; margin: 18px 0 6px; }
ul, ol { margin: 6px 0; padding-left: 22px; } li { margin: 3px 0; }
.ok { color: #5c8a00; } .fail { color: #d0312d; }
.muted { color: #80868e; font-size: 12px; }
.btn { display: inline-block; border: 0; border-radius: 18px; padding: 8px 20px; margin-top: 14px;
  font-family: inherit; font-size: 12px; font-weight: 600; line-height: 1.5; text-transform: uppercase;
  color: #535c69; background: #bbed21; cursor: pointer; text-decoration: none; }
"""


def _page(title: str, body: str, script: str = "", head: str = "") -> str:
    return f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>{head}<style>{_PAGE_STYLE}</style></head>
<body><div class="card">{body}</div>{script}</body></html>
"""


def installer_page(domain: str, public_url: str, outcome: InstallOutcome) -> str:
    """What the admin sees on the installer page: what was set up and what to do next. The page
    finishes the install itself (BX24.installFinish), after which the portal opens the app."""
    script = html.escape(bx24_script_url(domain), quote=True)
    report = outcome.manifest
    done = ["поле «Статус клиента» и причина закрытия в контактах и компаниях",
            "вкладка «Не забыт» в карточках контакта и компании",
            "обработчики событий CRM: каждое изменение и каждый звонок доходят до приложения",
            "роботы для лидов и сделок в разделе «Роботы»"]
    robots = len(getattr(report, "robots_added", []) or []) + len(getattr(report, "robots_updated", []) or [])
    if robots:
        done[3] += f" (зарегистрировано: {robots})"
    items = "".join(f"<li>{html.escape(line)}</li>" for line in done)
    title = "«Не забыт» установлен" if outcome.created else "«Не забыт» готов к работе"
    body = f"""<h1 class="ok">{title}</h1>
<p>Приложение подключено к порталу {html.escape(domain.split(":")[0])}. Настроено:</p>
<ul>{items}</ul>
<h2>Что дальше</h2>
<ol>
<li>Откройте «Не забыт» в меню приложений слева — сейчас он откроется сам.</li>
<li>На вкладке «Настройки», в разделе «Статусы и сроки», проверьте, сколько дней клиент может оставаться в каждом статусе без звонка.</li>
<li>Там же, в разделах «Когда клиент пропал» и «Уведомления», выберите, кому передавать потерянных клиентов и в какое время присылать ежедневную сводку.</li>
<li>Уже есть статусы в таблице? Загрузите их на вкладке «Загрузка статусов».</li>
<li>Менеджерам ничего делать не нужно: они работают как обычно, статус меняется после звонка.</li>
</ol>
<p class="muted">Настройки и данные сохраняются при обновлении и переустановке приложения.</p>
<button class="btn" type="button" id="finish">Открыть настройки</button>"""
    finish = f"""<script src="{script}"></script>
<script>
function nezabytFinish() {{ if (window.BX24) {{ BX24.installFinish(); }} }}
document.getElementById('finish').addEventListener('click', nezabytFinish);
if (window.BX24) {{ BX24.init(nezabytFinish); }}
</script>"""
    return _page("«Не забыт» — установка", body, finish)


# What the admin reads when the installer page fails, by the status the install answered.
_FAILURE_TEXT = {
    400: ("Портал прислал неполные данные установки.",
          "Откройте приложение из меню портала ещё раз; если не поможет — переустановите его из раздела «Приложения»."),
    401: ("Портал не подтвердил установку.",
          "Откройте приложение из меню портала ещё раз: ссылка установки действует недолго."),
    403: ("Установить приложение может только администратор портала.",
          "Попросите администратора открыть «Не забыт» в разделе «Приложения»."),
    502: ("Битрикс24 отказал в настройке приложения.",
          "Ничего не сохранено. Переустановите приложение; если ошибка повторится, передайте её текст в поддержку."),
    503: ("Битрикс24 сейчас занят.",
          "Ничего не изменено. Попробуйте установить ещё раз через минуту."),
}


def install_failure_page(status: int, message: str) -> str:
    """The installer page's answer when the install failed: what happened, in Russian, what to do,
    and the technical reason for support."""
    head, advice = _FAILURE_TEXT.get(status, _FAILURE_TEXT[502] if status >= 500 else _FAILURE_TEXT[400])
    body = f"""<h1 class="fail">«Не забыт» не установлен</h1>
<p>{html.escape(head)}</p>
<p>{html.escape(advice)}</p>
<p class="muted">Для поддержки: {status} — {html.escape(message)}</p>"""
    return _page("«Не забыт» — установка не удалась", body)


def _truthy(value) -> bool:
    return value is True or str(value).upper() in ("Y", "1", "TRUE")


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
